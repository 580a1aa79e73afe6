import { api, apiFetch, isFinal, type Job } from './api';
import { followEventStream } from './sse';

export interface PartialImage {
  partial_image_index: number;
  b64_json: string;
  size?: string;
  output_format?: string;
}

export interface JobProgress {
  onStatus(status: string, queuePosition: number | null | undefined): void;
  onPartial?(p: PartialImage): void;
  onReconnect?(attempt: number): void;
}

/**
 * Follows a job to its end through `GET /v1/jobs/{id}/events` (status moves, queue position,
 * partial images, then the final job object) and returns the final job. If the stream cannot be
 * kept, it falls back to long-polling `GET /v1/jobs/{id}?wait=30`.
 */
export async function followJob(jobId: string, progress: JobProgress, signal: AbortSignal): Promise<Job | null> {
  let final: Job | null = null;
  try {
    await followEventStream({
      signal,
      open: (lastEventId, s) => apiFetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { headers: lastEventId ? { 'last-event-id': lastEventId } : {}, signal: s }),
      done: () => final !== null,
      onReconnect: progress.onReconnect,
      onEvent: (e) => {
        let data: unknown;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        if (e.event === 'status') {
          const d = data as { status: string; queue_position?: number | null };
          progress.onStatus(d.status, d.queue_position);
        } else if (e.event === 'partial_image') progress.onPartial?.(data as PartialImage);
        else if (e.event === 'job') final = data as Job;
      },
    });
  } catch (err) {
    if (signal.aborted) return null;
    // the stream is gone for good (a proxy that buffers it, say): poll instead
    console.warn('job event stream failed, polling instead', err);
  }
  while (!final && !signal.aborted) {
    const job: Job = await api<Job>(`/v1/jobs/${encodeURIComponent(jobId)}`, { query: { wait: 30 }, signal });
    progress.onStatus(job.status, job.queue_position);
    if (isFinal(job.status)) final = job;
  }
  return final;
}
