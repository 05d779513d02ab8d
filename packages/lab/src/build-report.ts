/**
 * Rebuilds a report from its result files without running anything:
 * `npx tsx src/lab/build-report.ts [DIR]` (default `report`), or
 * `node dist/src/lab/build-report.js [DIR]` after `npm run build`.
 */
import { buildReport } from './report.js';

const dir = process.argv[2] ?? 'report';
const files = await buildReport(dir);
process.stdout.write(`report: ${files.join(', ')}\n`);
