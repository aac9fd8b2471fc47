/**
 * Batching: collects items into a batch that closes when it holds `size` items
 * or `timeoutMs` after its first item arrived, whichever comes first.
 *
 * @example
 * ```ts
 * import { Batcher } from "./batcher.ts";
 * const batcher = new Batcher<number>({
 *   size: 100,
 *   timeoutMs: 1000,
 *   onBatch: (items) => console.log(`closed ${items.length}`),
 * });
 * batcher.add(1); // closes after 1 s, or at the 100th item
 * batcher.close(); // closes now
 * ```
 *
 * @module
 */

/** Options of {@link Batcher}. */
export interface BatcherOptions<T> {
  /** Items that close a batch. */
  size: number;
  /** Milliseconds after its first item that a batch closes. */
  timeoutMs: number;
  /** Receives each closed, non-empty batch, in order. */
  onBatch: (items: T[]) => void;
}

/** Size- and time-bounded batching of items, closed batches handed on in order. */
export class Batcher<T> {
  #items: T[] = [];
  #openedAt = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #options: BatcherOptions<T>;

  constructor(options: BatcherOptions<T>) {
    if (!Number.isInteger(options.size) || options.size < 1) {
      throw new RangeError(
        `Cannot batch as 'size' must be a positive integer: current value is ${options.size}`,
      );
    }
    this.#options = options;
  }

  /** Items in the open batch. */
  get length(): number {
    return this.#items.length;
  }

  /** `performance.now()` when the open batch got its first item; 0 when empty. */
  get openedAt(): number {
    return this.#openedAt;
  }

  /** Adds an item; closes the batch when it reaches the size. */
  add(item: T): void {
    if (this.#items.length === 0) {
      this.#openedAt = performance.now();
      this.#timer = setTimeout(() => this.close(), this.#options.timeoutMs);
    }
    this.#items.push(item);
    if (this.#items.length >= this.#options.size) this.close();
  }

  /**
   * Closes the open batch now and hands it on.
   *
   * @returns how many items it held (0 when it was empty, and nothing is handed on)
   */
  close(): number {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const items = this.#items;
    if (items.length === 0) return 0;
    this.#items = [];
    this.#openedAt = 0;
    this.#options.onBatch(items);
    return items.length;
  }
}
