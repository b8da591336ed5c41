/**
 * Server-Sent Events (text/event-stream) for the lab: formatting one event and an incremental
 * parser of the stream (after HTTP and chunked decoding, which node:http does).
 */

/** One event: optional `event:` and `id:` lines, then the data (one line, JSON in the lab). */
export function formatEvent(data: string, event?: string, id?: string): string {
  let out = '';
  if (event) out += `event: ${event}\n`;
  if (id) out += `id: ${id}\n`;
  return `${out}data: ${data}\n\n`;
}

export interface SseEvent {
  event: string;
  id: string;
  data: string;
}

/** Feed text as it arrives; each blank line completes an event. */
export class SseParser {
  private text = '';

  push(chunk: string): SseEvent[] {
    this.text += chunk;
    const out: SseEvent[] = [];
    let end: number;
    while ((end = this.text.indexOf('\n\n')) >= 0) {
      const block = this.text.slice(0, end);
      this.text = this.text.slice(end + 2);
      const ev: SseEvent = { event: 'message', id: '', data: '' };
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue; // comment / keep-alive
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') data.push(value);
        else if (field === 'event') ev.event = value;
        else if (field === 'id') ev.id = value;
      }
      if (data.length === 0) continue;
      ev.data = data.join('\n');
      out.push(ev);
    }
    return out;
  }
}
