import { describe, expect, it } from '@jest/globals';
import { idTime, newId } from './ids';

describe('ids', () => {
  it('sort by creation time and tell it back', () => {
    const t = Date.UTC(2026, 10, 21, 12, 0, 0);
    const a = newId('job', t);
    const b = newId('job', t + 1);
    expect(a < b).toBe(true);
    expect(idTime(a)).toBe(t);
    expect(idTime(`file-${newId('file', t).slice('file_'.length)}`)).toBe(t);
  });
  it('know nothing of other names', () => {
    expect(idTime('imported-by-hand')).toBeUndefined();
    expect(idTime('job_short')).toBeUndefined();
    expect(idTime(`${newId('job')}x`)).toBeUndefined();
  });
});
