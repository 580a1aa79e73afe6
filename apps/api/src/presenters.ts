/**
 * The job object and OpenAI's response live in packages/core (job-view.ts): the worker renders the
 * same job object for webhook payloads. Routes keep importing them from here.
 */
export { editResponse, jobObject, publicError } from '@image-edits/core';
