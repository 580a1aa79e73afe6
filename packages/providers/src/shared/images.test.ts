import { randomBytes, randomInt } from 'node:crypto';
import { describe, expect, it } from '@jest/globals';
import { canonicalBase64 } from './images';

/** What a provider might send instead of clean base64. */
const MUTATIONS: ((s: string) => string)[] = [
  (s) => `${s.slice(0, 76)}\n${s.slice(76)}`, // MIME line breaks
  (s) => `${s} `,
  (s) => ` ${s.slice(1)}`,
  (s) => s.replace(/=+$/, ''), // padding dropped
  (s) => s.replace(/\+/g, '-').replace(/\//g, '_'), // URL-safe alphabet
  (s) => {
    const i = randomInt(s.length);
    return `${s.slice(0, i)}"${s.slice(i + 1)}`; // a character JSON would have to escape
  },
  (s) => {
    const i = randomInt(s.length);
    return `${s.slice(0, i)}\\${s.slice(i)}`.slice(0, s.length);
  },
  (s) => (s.endsWith('==') ? `${s.slice(0, -3)}${s.at(-3) === 'Q' ? 'R' : 'Q'}==` : s.endsWith('=') ? `${s.slice(0, -2)}${s.at(-2) === 'E' ? 'F' : 'E'}=` : s), // spare bits set
  (s) => s.replace(/=/g, '"'),
  (s) => `${s.slice(0, 4)}====${s.slice(8)}`,
];

describe('canonicalBase64', () => {
  it('takes the canonical encoding of any bytes', () => {
    for (let n = 0; n < 64; n++) {
      const bytes = randomBytes(n);
      expect(canonicalBase64(bytes.toString('base64'), bytes)).toBe(bytes.toString('base64'));
    }
  });

  it('takes nothing else that decodes to the same bytes: whatever it accepts is the canonical text', () => {
    let refused = 0;
    for (let round = 0; round < 3000; round++) {
      const original = randomBytes(randomInt(1, 200));
      const text = MUTATIONS[round % MUTATIONS.length]!(original.toString('base64'));
      const decoded = Buffer.from(text, 'base64'); // what the adapter has in hand
      const accepted = canonicalBase64(text, decoded);
      if (accepted === undefined) refused++;
      else expect(accepted).toBe(decoded.toString('base64'));
    }
    expect(refused).toBeGreaterThan(2000);
  });
});
