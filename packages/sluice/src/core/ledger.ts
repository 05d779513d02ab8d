/**
 * The conservation ledger. Every accepted item ends in exactly one terminal column
 * (committed, dropped by reason, dead-lettered) or is still in flight.
 *
 *   accepted = committed + dropped + dead_lettered + in_flight
 *
 * `inFlight` is not derived from the other columns: the pipeline measures it from the
 * items it really holds (queue, spill, batches being written), so `balanced()` is a
 * check that can fail, not an identity.
 */
export interface LedgerSnapshot {
  accepted: number;
  committed: number;
  dropped: number;
  droppedByReason: Record<string, number>;
  deadLettered: number;
  inFlight: number;
  /** Offers refused with an error (block timeout, closed): never accepted, the caller kept them. */
  rejected: number;
  /**
   * Redeliveries of records already accepted (still in flight, or committed and acked but the
   * ack was lost): counted here and not accepted again, so `accepted` counts each record once.
   * Outside the conservation law.
   */
  redelivered: number;
  balanced: boolean;
}

export class Ledger {
  accepted = 0;
  committed = 0;
  deadLettered = 0;
  rejected = 0;
  redelivered = 0;
  /**
   * Bytes (`Envelope.bytes`) of the items accepted into the queue or the spill store; items
   * dropped at the door (`drop-newest`, a full spill) are not counted. Kept here, one add
   * per item, so that metrics read it rather than observe every item.
   */
  bytesIn = 0;
  private dropped = new Map<string, number>();

  drop(reason: string, n = 1): void {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + n);
  }

  droppedTotal(): number {
    let s = 0;
    for (const v of this.dropped.values()) s += v;
    return s;
  }

  snapshot(inFlight: number): LedgerSnapshot {
    const dropped = this.droppedTotal();
    return {
      accepted: this.accepted,
      committed: this.committed,
      dropped,
      droppedByReason: Object.fromEntries(this.dropped),
      deadLettered: this.deadLettered,
      inFlight,
      rejected: this.rejected,
      redelivered: this.redelivered,
      balanced: this.accepted === this.committed + dropped + this.deadLettered + inFlight,
    };
  }
}

/** One-line rendering for logs and the CLI. */
export function formatLedger(s: LedgerSnapshot): string {
  const reasons = Object.entries(s.droppedByReason)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return (
    `accepted=${s.accepted} committed=${s.committed} dropped=${s.dropped}${reasons ? `(${reasons})` : ''} ` +
    `dead_lettered=${s.deadLettered} in_flight=${s.inFlight} rejected=${s.rejected} ` +
    (s.redelivered ? `redelivered=${s.redelivered} ` : '') +
    (s.balanced ? 'balanced' : 'UNBALANCED')
  );
}
