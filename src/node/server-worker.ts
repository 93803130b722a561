/** Entry point of a rendezvous server worker process, forked by startServer({ workers }) (see cluster.ts). */
import { runServerWorker } from './cluster.js';

runServerWorker();
