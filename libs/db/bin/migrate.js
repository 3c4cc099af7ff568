#!/usr/bin/env node
// Runs the compiled package: `npm run build -w @expertune/db` first (the root `npm run migrate` does).
import { migrateMain } from '../dist/libs/db/src/migrate.js';

process.exitCode = await migrateMain();
