import { randomBytes } from 'node:crypto';

/**
 * A multipart/form-data body built once into one Buffer, so every request of a run sends exactly the
 * same bytes and the load generator spends no CPU encoding forms (it shares the cores with the server).
 */
export interface MultipartBody {
  body: Buffer;
  contentType: string;
}

export type FilePart = { field: string; filename: string; contentType: string; data: Buffer };

export function buildMultipart(fields: Record<string, string>, files: FilePart[]): MultipartBody {
  const boundary = `----bench${randomBytes(12).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const [name, value] of Object.entries(fields)) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
  }
  for (const f of files) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${f.field}"; filename="${f.filename}"\r\nContent-Type: ${f.contentType}\r\n\r\n`));
    chunks.push(f.data, Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}
