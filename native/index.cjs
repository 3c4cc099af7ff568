'use strict';
// Loads the native addon built by `npm run build:native` (cmake-js, build/Release/expertune.node).
const path = require('node:path');
const fs = require('node:fs');

const candidates = [
  process.env.EXPERTUNE_NATIVE_ADDON,
  path.join(__dirname, 'build', 'Release', 'expertune.node'),
  path.join(__dirname, 'build', 'Debug', 'expertune.node'),
].filter(Boolean);

const found = candidates.find((file) => fs.existsSync(file));
if (!found) {
  throw new Error(
    'The Expertune native addon is not built. Run `npm run build:native` from the repository root ' +
      '(it installs OpenBLAS with apt-get when it is missing and builds with cmake-js).',
  );
}
module.exports = require(found);
module.exports.addonPath = found;
