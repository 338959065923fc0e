// Prints the variables table of docs/configuration.md from CONFIG_VARIABLES (the test checks the doc
// against the code; this keeps writing it mechanical).
import { CONFIG_VARIABLES } from '../server/src/config.js';

const esc = (s: string): string => s.replace(/\|/g, '\\|');
process.stdout.write(`${CONFIG_VARIABLES.map((v) => `| \`${v.name}\` | ${esc(v.default)} | ${esc(v.description)} |`).join('\n')}\n`);
