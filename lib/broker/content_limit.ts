/**
 * A byte limit on what amqplib assembles of a message: of a body over
 * `maxBytes`, only the first `maxBytes` bytes are handed to amqplib, and the
 * rest of its content frames are dropped as they are read. Without it amqplib
 * gathers every content frame of a message and concatenates them — a 100 MB
 * body costs 200 MB before the service sees it, whatever it does then. The
 * message is then delivered as usual, cut, with its size as received under
 * {@link RECEIVED_SIZE} in its properties (`delivery.ts` reads it).
 *
 * This wraps `acceptMessageFrame`, amqplib's (2.x) per-channel entry for
 * message frames (deliver or return, then a properties frame holding the body
 * size, then content frames of at most frame_max bytes each): amqplib has no
 * public hook for it. `tests/system/hostile_test.ts` fails if an upgrade changes it.
 *
 * It does not decide what a cut message becomes (`../pipeline/message.ts`).
 *
 * @module
 */

import type { Channel } from "amqplib";

/** Where a cut message's properties keep its body size as received. */
export const RECEIVED_SIZE: unique symbol = Symbol("receivedSize");

/** amqplib's id of a content-header frame (the class id of basic: 60). */
const PROPERTIES_FRAME = 60;

interface Frame {
  id?: number;
  size?: number;
  fields?: Record<PropertyKey, unknown>;
  content?: Uint8Array;
}

/** From now on, `channel` assembles at most `maxBytes` of any message body; see the module documentation. */
export function limitContent(channel: Channel, maxBytes: number): void {
  const target = channel as unknown as { acceptMessageFrame(f: Frame): void };
  const accept = target.acceptMessageFrame.bind(channel);
  let keep = 0; // bytes of the current body still passed on
  let drop = 0; // bytes of it still dropped after them
  target.acceptMessageFrame = (f: Frame) => {
    if (f.id === PROPERTIES_FRAME && f.size !== undefined && f.size > maxBytes && f.fields) {
      keep = maxBytes;
      drop = f.size - maxBytes;
      f.fields[RECEIVED_SIZE] = f.size;
      return accept({ ...f, size: maxBytes });
    }
    if (f.id === undefined && f.content && (keep > 0 || drop > 0)) {
      const passed = Math.min(keep, f.content.byteLength);
      keep -= passed;
      drop -= f.content.byteLength - passed;
      // The last kept byte completes the message in amqplib: what follows in this frame and after is dropped.
      if (passed > 0) return accept({ ...f, content: f.content.subarray(0, passed) });
      return;
    }
    return accept(f);
  };
}
