// Starts a worker thread's TypeScript module when vxnetd runs from source under tsx (tests,
// probes, benches): a worker does not inherit the loader hooks that `--import tsx` registered on
// the main thread, so it registers them before it imports the module (workerData.tsModule).
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.tsModule);
