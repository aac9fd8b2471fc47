/**
 * One results stream client as the hub sees it ({@link ./hub.ts}): its
 * position (the sequence of the last event it was sent), whether a heartbeat
 * is due, whether its stream is to end, and the hooks that wake and cut its
 * stream, set by the route that serves it ({@link ./routes.ts}). It owns no
 * data: what it is sent next is the hub's `next(client)`.
 *
 * @module
 */

/** One stream client: where it is, and a way to wake its stream. */
export class StreamClient {
  /** Sequence of the last event sent; undefined until its snapshot is sent. */
  at: number | undefined;
  heartbeatDue = false;
  closed = false;
  /** Ends its stream at once, sent or not (set by the route that serves it). */
  abort: (() => void) | undefined;
  /**
   * Called at each wake (set by the route that serves it: it asks {@link ResultsHub.next} and writes,
   * synchronously, with no promise per client and wake). Must not throw.
   */
  onwake: (() => void) | undefined;

  constructor(at: number | undefined) {
    this.at = at;
  }

  /** A change to send, a heartbeat or a close: its stream asks the hub what is due. */
  wake(): void {
    this.onwake?.();
  }
}
