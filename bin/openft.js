#!/usr/bin/env node
// Runs the built CLI (npm run build writes dist/).
import { main } from "../dist/src/main.js";

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
