import { describe, expect, it } from '@jest/globals';
import { createByteBudget, jobFootprint } from './byte-budget';

describe('byte budget', () => {
  it('admits jobs while they fit, in order, and the next one when bytes are released', async () => {
    const budget = createByteBudget(100);
    const started: string[] = [];
    const run = (name: string, bytes: number) => budget.acquire(bytes).then(() => started.push(name));
    const a = run('a', 60);
    const b = run('b', 50);
    const c = run('c', 10);
    await a;
    await new Promise((r) => setImmediate(r));
    // b does not fit beside a; c would, but waits its turn behind b
    expect(started).toEqual(['a']);
    expect(budget.waiting()).toBe(2);
    budget.release(60);
    await Promise.all([b, c]);
    expect(started).toEqual(['a', 'b', 'c']);
    expect(budget.inFlight()).toBe(60);
  });

  it('runs a job larger than the whole budget alone rather than never', async () => {
    const budget = createByteBudget(100);
    await budget.acquire(500);
    expect(budget.inFlight()).toBe(500);
    const small = budget.acquire(1);
    let admitted = false;
    void small.then(() => (admitted = true));
    await new Promise((r) => setImmediate(r));
    expect(admitted).toBe(false);
    budget.release(500);
    await small;
    expect(budget.inFlight()).toBe(1);
  });

  it('counts the copies of the inputs a call holds and 2 MB per output', () => {
    expect(jobFootprint({ images: [{ bytes: 10 }, { bytes: 20 }], mask: { bytes: 5 } }, 2)).toBe(5 * 35 + 4 * 1024 * 1024);
  });
});
