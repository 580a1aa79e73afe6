import { describe, expect, it } from '@jest/globals';
import { PRIORITY_LIMIT } from 'bullmq';
import { fairPriority, LANE_PRIORITIES, LANE_SPAN, type Lane, LaneModel, tagOfPriority } from './fairness';

/** BullMQ's order: lowest priority first, ties in the order they were added. */
class FakeQueue {
  private seq = 0;
  private waiting: { key: string; priority: number; seq: number }[] = [];
  constructor(private readonly model: LaneModel) {}
  add(lane: Lane, key: string, count = 1): void {
    for (const priority of this.model.enqueue(lane, key, count)) this.waiting.push({ key, priority, seq: this.seq++ });
  }
  /** the next `n` jobs to start, by key */
  start(n: number): string[] {
    const started: string[] = [];
    for (let i = 0; i < n && this.waiting.length; i++) {
      this.waiting.sort((a, b) => a.priority - b.priority || a.seq - b.seq);
      const job = this.waiting.shift()!;
      this.model.started(job.priority);
      started.push(job.key);
    }
    return started;
  }
  get size() {
    return this.waiting.length;
  }
}

describe('priorities', () => {
  it('fit BullMQ: never 0 (unprioritized jobs would run first), never above PRIORITY_LIMIT', () => {
    expect(fairPriority('direct', 0)).toBe(1);
    expect(fairPriority('batch', 0)).toBe(LANE_SPAN);
    expect(LANE_PRIORITIES.batch.hi).toBe(PRIORITY_LIMIT);
    expect(fairPriority('batch', 10 ** 9)).toBe(PRIORITY_LIMIT);
  });

  it('every direct job goes before any batch child, whatever their tags', () => {
    expect(fairPriority('direct', 10 ** 9)).toBeLessThan(fairPriority('batch', 0));
    expect(fairPriority('direct', 10 ** 9)).toBe(LANE_SPAN - 1);
  });

  it('map back to their lane and tag', () => {
    expect(tagOfPriority(fairPriority('direct', 41))).toEqual({ lane: 'direct', tag: 41 });
    expect(tagOfPriority(fairPriority('batch', 7))).toEqual({ lane: 'batch', tag: 7 });
    expect(tagOfPriority(0)).toBeNull();
    expect(tagOfPriority(undefined)).toBeNull();
  });
});

describe('fair order (the rule the Redis scripts apply)', () => {
  it("a newcomer's first job overtakes a 2,000-job backlog", () => {
    const q = new FakeQueue(new LaneModel());
    q.add('direct', 'A', 2000);
    expect(q.start(3)).toEqual(['A', 'A', 'A']);
    q.add('direct', 'B');
    // B's job is next, not after A's 1,997 others
    expect(q.start(1)).toEqual(['B']);
    expect(q.size).toBe(1997);
  });

  it('keys with work take turns, one job each per round; each key first in, first out', () => {
    const model = new LaneModel();
    const order: string[] = [];
    const q = { waiting: [] as { name: string; priority: number; n: number }[], n: 0 };
    for (const [key, count] of [['A', 4], ['B', 3], ['C', 1]] as const) {
      for (const [i, priority] of model.enqueue('direct', key, count).entries()) q.waiting.push({ name: `${key}${i + 1}`, priority, n: q.n++ });
    }
    while (q.waiting.length) {
      q.waiting.sort((a, b) => a.priority - b.priority || a.n - b.n);
      const job = q.waiting.shift()!;
      model.started(job.priority);
      order.push(job.name);
    }
    expect(order).toEqual(['A1', 'B1', 'C1', 'A2', 'B2', 'A3', 'B3', 'A4']);
  });

  it('a key with nothing waiting starts level with the job being served: no credit for idle time', () => {
    const q = new FakeQueue(new LaneModel());
    q.add('direct', 'A', 200);
    q.start(100);
    q.add('direct', 'B', 10);
    // B does not get 100 turns in a row for having been away: the two alternate
    expect(q.start(10).join('')).toMatch(/^(AB|BA){5}$/);
  });

  it('batch children wait for every direct job, and share their own lane fairly', () => {
    const q = new FakeQueue(new LaneModel());
    q.add('batch', 'A', 100);
    q.add('batch', 'B', 2);
    q.add('direct', 'A', 1);
    q.add('direct', 'C', 1);
    expect(q.start(4)).toEqual(['A', 'C', 'A', 'B']);
  });

  it('lanes keep separate lines: a key’s batch does not push back its direct jobs', () => {
    const model = new LaneModel();
    const batch = model.enqueue('batch', 'A', 5000);
    const direct = model.enqueue('direct', 'A', 1);
    expect(direct).toEqual([1]);
    expect(batch[4999]).toBe(LANE_SPAN + 4999);
  });
});
