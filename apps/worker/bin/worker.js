#!/usr/bin/env node
// The expertune worker (built into ../dist by `npm run build -w @expertune/worker`).
import { main } from '../dist/main.js';

await main();
