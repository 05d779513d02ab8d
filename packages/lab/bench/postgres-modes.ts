/**
 * PostgresSink's write paths against each other (see src/sinks/postgres.ts): `copy` (COPY into
 * the table, staged fallback on a conflict), `staged`, `insert`, `json` and `append`, each into
 * its own default table `(id text primary key, received_at, doc jsonb)`, in the same process run,
 * on the same records, interleaved batch by batch so that noise from a shared machine hits
 * both modes alike. Not part of `npm test`.
 *
 *   npx tsx bench/postgres-modes.ts [--url postgres://…] [--sizes 1,10,100,1000,4096] [--ms 3000] [--modes copy,staged,insert,json,append]
 *
 * Prints the host, then per batch size the median and p90 wall time of one batch write and
 * the cost per item, and each mode's median over the fastest one's.
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { PostgresSink, type PostgresWriteMode } from 'sluice';
import { RecordFactory } from '../src/records/records.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
}
const url = arg('url', process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test');
const sizes = arg('sizes', '1,10,100,1000,4096').split(',').map(Number);
const budgetMs = Number(arg('ms', '3000'));
const modes: PostgresWriteMode[] = (arg('modes', 'copy,staged,insert,json,append').split(',') as PostgresWriteMode[]);

const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];

async function main(): Promise<void> {
  console.log(`host: ${os.cpus().length} × ${os.cpus()[0]?.model}, node ${process.version}, load avg ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`server: ${url.replace(/:[^:@/]*@/, ':***@')}\n`);
  const factory = new RecordFactory({ seed: 7 });
  const sinks = new Map<PostgresWriteMode, PostgresSink>();
  for (const mode of modes) {
    const s = new PostgresSink({ connectionString: url, table: `sluice_bench_${mode}_${process.pid}`, mode, maxConnections: 1 });
    await s.open();
    sinks.set(mode, s);
  }
  let next = 0;
  const rows: string[] = [];
  try {
    for (const size of sizes) {
      const samples = new Map<PostgresWriteMode, number[]>(modes.map((m) => [m, []]));
      // Warm-up: prepared statement, temp staging table, server caches.
      for (const mode of modes) for (let w = 0; w < 5; w++) await sinks.get(mode)!.write(Array.from({ length: size }, () => factory.make(next++, 0)));
      const t0 = performance.now();
      let reps = 0;
      while ((performance.now() - t0 < budgetMs || reps < 10) && reps < 2000) {
        // Alternate which mode goes first so neither always follows the other's checkpoint work.
        const order = reps % 2 === 0 ? modes : [...modes].reverse();
        for (const mode of order) {
          const batch = Array.from({ length: size }, () => factory.make(next++, 0));
          const s = performance.now();
          await sinks.get(mode)!.write(batch);
          samples.get(mode)!.push(performance.now() - s);
        }
        reps++;
      }
      const med = new Map(modes.map((m) => [m, q(samples.get(m)!, 0.5)]));
      for (const mode of modes) {
        const xs = samples.get(mode)!;
        rows.push(
          `| ${size} | ${mode} | ${xs.length} | ${q(xs, 0.5).toFixed(3)} | ${q(xs, 0.9).toFixed(3)} | ${((q(xs, 0.5) / size) * 1000).toFixed(2)} | ${Math.round(size / (q(xs, 0.5) / 1000))} |`,
        );
      }
      const fastest = modes.reduce((a, b) => (med.get(b)! < med.get(a)! ? b : a));
      rows.push(`| ${size} | fastest: ${fastest}; each ÷ fastest (median) | | ${modes.map((m) => `${m} ${(med.get(m)! / med.get(fastest)!).toFixed(2)}×`).join(', ')} | | | |`);
      for (const mode of modes) await sinks.get(mode)!.truncate();
    }
  } finally {
    for (const s of sinks.values()) {
      await s.dropTable();
      await s.close();
    }
  }
  console.log('| batch | mode | batches | median ms/batch | p90 ms/batch | µs/item (median) | items/s (median) |');
  console.log('|---:|---|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(r);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
