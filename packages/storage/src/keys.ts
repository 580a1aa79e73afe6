/**
 * Where objects live in the bucket. Output keys are deterministic per job and index, so a retried
 * or restarted job overwrites its own outputs instead of leaving a second set behind.
 */
export const inputImageKey = (jobId: string, index: number, ext: string) => `jobs/${jobId}/input/image-${index}.${ext}`;
export const inputMaskKey = (jobId: string) => `jobs/${jobId}/input/mask.png`;
export const outputKey = (jobId: string, index: number, ext: string) => `jobs/${jobId}/output/${index}.${ext}`;
export const jobPrefix = (jobId: string) => `jobs/${jobId}/`;
export const outputPrefix = (jobId: string) => `jobs/${jobId}/output/`;
/** A file of POST /v1/files: outside jobs/, so deleting a job's objects never touches a file. */
export const fileKey = (fileId: string) => `files/${fileId}`;

export const CONTENT_TYPES: Record<string, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };
export const extensionFor = (format: string) => (format === 'jpeg' ? 'jpg' : format);
/** A batch's one copy of a file its lines name by file_id, shared by its children (outside jobs/ and files/). */
export const batchFileInputKey = (batchId: string, fileId: string) => `batches/${batchId}/files/${fileId}`;
