import type { ProviderCallOptions } from '../types';

/**
 * The upstream request ids of one edit call, for adapters whose requests can be resumed (fal's
 * queue requests, Replicate's predictions). A call that needs several upstream requests has one
 * slot per request, and the ids are kept in slot order: what an earlier attempt recorded for slot
 * i is resumed as slot i. Adapters fill new slots in order, so the list never has a gap.
 */
export interface RequestIds {
  /** the id an earlier attempt recorded for this slot, if any */
  resumed(slot: number): string | undefined;
  /**
   * Puts a new request's id in its slot and reports every id so far to `onSubmitted`, awaited.
   * Reports run one after another (a later one never overtakes an earlier one). If the callback
   * throws, this rejects with an `OnSubmittedFailed` carrying its error.
   */
  record(slot: number, id: string): Promise<void>;
}

/** The caller's `onSubmitted` failed: the adapter rethrows `cause` as it is and cancels nothing. */
export class OnSubmittedFailed extends Error {
  override readonly cause: unknown;

  constructor(cause: unknown) {
    super('onSubmitted failed');
    this.name = 'OnSubmittedFailed';
    this.cause = cause;
  }
}

export function requestIds(slots: number, options: ProviderCallOptions | undefined): RequestIds {
  const resumed = (options?.resume ?? []).filter((id) => typeof id === 'string' && id !== '').slice(0, slots);
  const ids = [...resumed];
  const onSubmitted = options?.onSubmitted;
  let reports: Promise<void> = Promise.resolve();
  return {
    resumed: (slot) => resumed[slot],
    record(slot, id) {
      if (slot > ids.length) throw new Error(`request slot ${slot} recorded before slot ${ids.length}`);
      ids[slot] = id;
      if (!onSubmitted) return Promise.resolve();
      const report = reports.then(() => onSubmitted([...ids]));
      reports = report.catch(() => undefined);
      return report.catch((err: unknown) => {
        throw new OnSubmittedFailed(err);
      });
    },
  };
}
