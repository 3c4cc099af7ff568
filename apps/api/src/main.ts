import { createApp } from './app.js';
import { loadApiConfig } from './config/api-config.js';

const config = loadApiConfig();
const app = await createApp(config);
await app.listen(config.port, config.host);
console.log(`expertune api listening on http://${config.host}:${config.port} (docs at /docs)`);
