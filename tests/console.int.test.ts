import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type FakeOpenAI, makePng, pictureRgba, startFakeOpenAI, startTestService, type TestService } from '@image-edits/testing';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import sharp from 'sharp';
import { get } from './helpers';

/**
 * The browser console, end to end: the built app served by the API at /, driven in Debian's headless
 * Chromium (playwright-core, no downloaded browser) against the real service (Postgres, Redis, S3,
 * worker) with a fake OpenAI upstream. Screenshots land in test-artifacts/console/ (gitignored).
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.resolve(__dirname, '../test-artifacts/console');
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

let svc: TestService;
let upstream: FakeOpenAI;
let browser: Browser;
let laptop: BrowserContext;
let page: Page;
const pageErrors: string[] = [];

beforeAll(async () => {
  // what `npm start` does before it starts: build the console when its sources changed
  execFileSync(process.execPath, [path.resolve(__dirname, '../apps/console/scripts/ensure-build.mjs')], { stdio: 'inherit' });
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  upstream = await startFakeOpenAI({ apiKey: 'sk-upstream' });
  svc = await startTestService({ OPENAI_API_KEY: 'sk-upstream', OPENAI_BASE_URL: upstream.url, MODEL_REGISTRY: JSON.stringify({ providers: { openai: { concurrency: 1 } } }) });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  laptop = await browser.newContext({ viewport: LAPTOP });
  // keeps each edit's multipart body as the page built it (DevTools does not report file parts of a request body)
  await laptop.addInitScript(() => {
    const w = window as unknown as { __edits: FormData[]; fetch: typeof fetch };
    const original = w.fetch.bind(window);
    w.__edits = [];
    w.fetch = (input, init) => {
      if (init?.body instanceof FormData && String(input).endsWith('/v1/images/edits')) w.__edits.push(init.body);
      return original(input, init);
    };
  });
  page = await newPage(laptop);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await svc?.stop();
  await upstream?.close();
});

async function newPage(context: BrowserContext): Promise<Page> {
  const p = await context.newPage();
  p.on('pageerror', (err) => pageErrors.push(err.message));
  p.on('dialog', (d) => void d.accept());
  return p;
}

const shot = (p: Page, name: string) => p.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });

async function signIn(p: Page): Promise<void> {
  await p.goto(`${svc.url}/`);
  await p.waitForURL(/\/signin/);
  await p.getByLabel('API key').fill(svc.apiKey);
  await p.getByRole('button', { name: 'Sign in' }).click();
  await p.waitForURL(/\/playground$/);
  await p.getByRole('heading', { name: 'Playground', level: 1 }).waitFor();
}

/** The last edit's multipart body the page sent: text fields as they are, files as their bytes. */
async function lastEditForm(p: Page): Promise<Record<string, string | Buffer>> {
  const entries = await p.evaluate(async () => {
    const form = (window as unknown as { __edits: FormData[] }).__edits.at(-1)!;
    const out: [string, string, boolean][] = [];
    for (const [k, v] of form.entries()) {
      if (typeof v === 'string') out.push([k, v, false]);
      else {
        const bytes = new Uint8Array(await v.arrayBuffer());
        let bin = '';
        for (const b of bytes) bin += String.fromCharCode(b);
        out.push([k, btoa(bin), true]);
      }
    }
    return out;
  });
  return Object.fromEntries(entries.map(([k, v, file]) => [k, file ? Buffer.from(v, 'base64') : v]));
}

async function rgba(png: Buffer): Promise<Buffer> {
  return sharp(png).ensureAlpha().raw().toBuffer();
}

describe('the console', () => {
  it('is served at / and its routes, without shadowing the API or the probes', async () => {
    for (const p of ['/', '/playground', '/jobs/job_0abc', '/batches', '/usage']) {
      const res = await fetch(`${svc.url}${p}`);
      expect([p, res.status, res.headers.get('content-type')]).toEqual([p, 200, 'text/html; charset=utf-8']);
      expect(res.headers.get('content-security-policy')).toContain("connect-src 'self'");
      expect(await res.text()).toContain('<div id="app">');
    }
    const models = await fetch(`${svc.url}/v1/models`);
    expect(models.status).toBe(401);
    expect(models.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await (await fetch(`${svc.url}/healthz`)).json()).toEqual({ status: 'ok' });
    for (const p of ['/openapi.json', '/v1', '/nope', '/assets/missing.js']) {
      expect([p, (await fetch(`${svc.url}${p}`)).headers.get('content-type')]).not.toEqual([p, 'text/html; charset=utf-8']);
    }
  });

  it('signs in with a key kept in sessionStorage, and refuses a wrong one', async () => {
    await page.goto(`${svc.url}/jobs`);
    await page.waitForURL(/\/signin\?next=%2Fjobs/);
    await shot(page, 'signin-laptop');
    await page.getByLabel('API key').fill('sk-wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'That key was refused' }).waitFor();
    await signIn(page);
    expect(await page.evaluate(() => Object.values(sessionStorage))).toEqual([svc.apiKey]);
    expect(await page.evaluate(() => Object.keys(localStorage))).toEqual([]);
  });

  it('paints a mask on local-inpaint, runs it, and shows a result whose unmasked pixels are the original', async () => {
    const size = 256;
    const original = await makePng(size, size);
    await page.goto(`${svc.url}/playground`);
    await page.getByLabel('Model').selectOption('local-inpaint');
    await page.getByLabel('Choose an image…').setInputFiles({ name: 'photo.png', mimeType: 'image/png', buffer: original });
    const canvas = page.getByRole('application', { name: /Mask canvas/ });
    await canvas.waitFor();
    const box = (await canvas.boundingBox())!;
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.3);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.6, box.y + box.height * 0.55, { steps: 10 });
    await page.mouse.up();
    await page.getByText(/Mask covers [\d.]+% of the image/).waitFor();
    await page.getByLabel('Prompt').fill('remove the stripe');
    await shot(page, 'playground-laptop');

    const request = page.waitForRequest((r) => r.url().endsWith('/v1/images/edits') && r.method() === 'POST');
    await page.getByRole('button', { name: 'Run edit' }).click();
    const sent = await request;
    expect(sent.headers().prefer).toBe('respond-async');
    const form = await lastEditForm(page);
    expect(form).toMatchObject({ model: 'local-inpaint', prompt: 'remove the stripe', response_format: 'b64_json' });
    // the image goes as it was picked, the mask in OpenAI's convention at the image's size
    expect((form.image as Buffer).equals(original)).toBe(true);
    const maskPng = form.mask as Buffer;
    const maskMeta = await sharp(maskPng).metadata();
    expect([maskMeta.format, maskMeta.width, maskMeta.height]).toEqual(['png', size, size]);

    await page.locator('.run-status').filter({ hasText: /^Succeeded/ }).waitFor({ timeout: 30_000 });
    await page.locator('.compare-after').first().waitFor();
    const jobId = (await page.locator('.job-link a').textContent())!;
    expect(jobId).toMatch(/^job_/);
    await shot(page, 'result-laptop');

    // the result as the page shows it is the job's result
    const job = (await get(`${svc.url}/v1/jobs/${jobId}`, svc.apiKey)).body;
    expect(job.status).toBe('succeeded');
    const b64 = job.result.data[0].b64_json as string;
    expect(await page.locator('.compare-after').first().getAttribute('src')).toBe(`data:image/png;base64,${b64}`);

    // every pixel outside the painted mask is the original's; the painted ones were filled in
    const result = await rgba(Buffer.from(b64, 'base64'));
    const mask = await rgba(maskPng);
    const before = pictureRgba(size, size);
    let kept = 0;
    let edited = 0;
    let changed = 0;
    for (let i = 0; i < size * size; i++) {
      const o = i * 4;
      const same = result.subarray(o, o + 4).equals(before.subarray(o, o + 4));
      if (mask[o + 3] === 255) {
        expect(same).toBe(true);
        kept++;
      } else {
        expect(mask[o + 3]).toBe(0);
        edited++;
        if (!same) changed++;
      }
    }
    expect(edited).toBeGreaterThan(500);
    expect(kept).toBeGreaterThan(size * size * 0.8);
    expect(changed).toBeGreaterThan(edited / 2);

    // the before/after slider moves by keyboard
    const slider = page.getByRole('slider', { name: 'Before / after' }).first();
    await slider.focus();
    await page.keyboard.press('End');
    expect(await slider.inputValue()).toBe('100');
  }, 60_000);

  it('shows partial images as a streaming model sends them', async () => {
    upstream.respondWith({ streamIntervalMs: 400 });
    await page.goto(`${svc.url}/playground`);
    await page.getByLabel('Model').selectOption('gpt-image-1');
    await page.getByLabel('Choose an image…').setInputFiles({ name: 'room.png', mimeType: 'image/png', buffer: await makePng(128, 128) });
    await page.getByRole('application', { name: /Mask canvas/ }).waitFor();
    await page.getByLabel('Prompt').fill('a red sofa');
    await page.getByLabel('Quality').selectOption('low');
    await page.getByLabel('Stream partial images as they are made').check();
    await page.getByLabel('Partial images (1–3)').fill('2');
    await page.getByRole('button', { name: 'Run edit' }).click();
    await page.getByRole('img', { name: 'Partial image 2' }).waitFor({ timeout: 30_000 });
    await page.locator('.run-status').filter({ hasText: /^Succeeded/ }).waitFor({ timeout: 30_000 });
    const fields = upstream.requests.at(-1)!.fields;
    expect(fields).toMatchObject({ stream: 'true', partial_images: '2', quality: 'low' });
    await shot(page, 'streamed-laptop');
  }, 60_000);

  it('cancels a job the upstream holds', async () => {
    const release = upstream.hold();
    try {
      await page.goto(`${svc.url}/playground`);
      await page.getByLabel('Model').selectOption('gpt-image-1');
      await page.getByLabel('Choose an image…').setInputFiles({ name: 'slow.png', mimeType: 'image/png', buffer: await makePng(64, 64) });
      await page.getByRole('application', { name: /Mask canvas/ }).waitFor();
      await page.getByLabel('Prompt').fill('take your time');
      const before = upstream.requests.length;
      await page.getByRole('button', { name: 'Run edit' }).click();
      await upstream.waitForRequests(before + 1);
      await page.locator('.run-status').filter({ hasText: 'Running' }).waitFor();
      await page.getByRole('button', { name: 'Cancel job' }).click();
      await page.locator('.run-status').filter({ hasText: /^Canceled/ }).waitFor({ timeout: 20_000 });
      const jobId = (await page.locator('.job-link a').textContent())!;
      expect((await get(`${svc.url}/v1/jobs/${jobId}`, svc.apiKey)).body.status).toBe('canceled');
    } finally {
      release();
    }
  }, 60_000);

  it('reaches every control by keyboard: paints with the keys and submits with Enter', async () => {
    await page.goto(`${svc.url}/playground`);
    await page.getByLabel('Model').selectOption('local-inpaint');
    await page.getByLabel('Choose an image…').setInputFiles({ name: 'keys.png', mimeType: 'image/png', buffer: await makePng(96, 96) });
    await page.getByRole('application', { name: /Mask canvas/ }).waitFor();
    // from the top of the page (its first stop, the skip link), Tab alone reaches the canvas, the prompt, the submit button
    await page.locator('.skip-link').focus();
    const reached: string[] = [];
    const tabTo = async (id: string, max = 80) => {
      for (let i = 0; i < max; i++) {
        await page.keyboard.press('Tab');
        const at = await page.evaluate(() => {
          const el = document.activeElement as HTMLElement | null;
          return el ? `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}|${el.getAttribute('aria-label') ?? el.textContent?.trim().slice(0, 30) ?? ''}` : '';
        });
        reached.push(at);
        if (at.includes(id)) return;
      }
      throw new Error(`Tab never reached ${id}: ${reached.join(', ')}`);
    };
    await tabTo('Mask canvas');
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('Space');
    await page.getByText(/Mask covers [\d.]+% of the image/).waitFor();
    await tabTo('textarea');
    await page.keyboard.type('fill it in');
    await tabTo('#submit-edit');
    await shot(page, 'keyboard-focus-laptop');
    // every stop on the way was a control, and a visible one
    expect(reached.some((r) => r.startsWith('a|') && r.includes('Jobs'))).toBe(true);
    expect(reached.some((r) => r.startsWith('select'))).toBe(true);
    expect(reached.some((r) => r.includes('Undo') || r.includes('Clear'))).toBe(true);
    await page.keyboard.press('Enter');
    await page.locator('.run-status').filter({ hasText: /^Succeeded/ }).waitFor({ timeout: 30_000 });
  }, 60_000);

  it('lists the jobs with filters, opens one, and deletes it', async () => {
    await page.getByRole('link', { name: 'Jobs' }).click();
    await page.waitForURL(/\/jobs$/);
    const rows = page.locator('table.data tbody tr');
    await rows.first().waitFor();
    expect(await rows.count()).toBeGreaterThanOrEqual(4);
    await shot(page, 'jobs-laptop');
    await page.getByLabel('Status').selectOption('canceled');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.waitForURL(/status=canceled/);
    await page.locator('table.data tbody tr').first().waitFor();
    expect(await page.locator('table.data tbody tr').count()).toBe(1);
    await page.locator('table.data tbody a').first().click();
    await page.getByRole('heading', { name: 'Summary' }).waitFor();
    await page.getByText('Webhook deliveries', { exact: true }).waitFor();
    await page.getByText(/No webhook deliveries|Event/).first().waitFor();
    await shot(page, 'job-laptop');
    const deletedId = /\/jobs\/(job_[0-9a-z]+)/.exec(page.url())?.[1];
    await page.getByRole('button', { name: 'Delete job' }).click();
    // DELETE /v1/jobs/{id}: the job is gone (back to the list) and the API no longer has it
    await page.waitForURL(/\/jobs$/);
    expect((await fetch(`${svc.url}/v1/jobs/${deletedId}`, { headers: { authorization: `Bearer ${svc.apiKey}` } })).status).toBe(404);
  }, 60_000);

  it('builds a batch from images and one prompt, follows it to completed, and offers its files', async () => {
    const hole = { x: 16, y: 16, width: 32, height: 32 };
    const img = await makePng(64, 64, { hole });
    await page.getByRole('link', { name: 'Batches' }).click();
    await page.waitForURL(/\/batches$/);
    await page.getByLabel('…or some images').setInputFiles([
      { name: 'one.png', mimeType: 'image/png', buffer: img },
      { name: 'two.png', mimeType: 'image/png', buffer: img },
    ]);
    await page.getByText('2 images chosen.').waitFor();
    await page.getByLabel('Model', { exact: true }).selectOption('local-inpaint');
    await page.getByLabel('Prompt (the same for every image)').fill('fill the hole');
    await page.getByRole('button', { name: 'Upload and create batch' }).click();
    await page.waitForURL(/\/batches\/batch_/, { timeout: 30_000 });
    await page.getByText('2 of 2 done').waitFor({ timeout: 60_000 });
    await page.locator('.badge-completed').first().waitFor({ timeout: 30_000 });
    await page.getByRole('img', { name: 'Result of two.png' }).waitFor();
    await shot(page, 'batch-laptop');
    const download = page.waitForEvent('download');
    await page.getByRole('button', { name: 'Download output file' }).click();
    const file = await download;
    const lines = readFileSync((await file.path())!, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.custom_id).sort()).toEqual(['one.png', 'two.png']);
    await page.getByRole('link', { name: '← Batches' }).click();
    await page.locator('table.data tbody tr').first().waitFor();
    await shot(page, 'batches-laptop');
  }, 120_000);

  it('shows usage by day and model', async () => {
    await page.getByRole('link', { name: 'Usage' }).click();
    await page.waitForURL(/\/usage$/);
    await page.locator('main [aria-busy="false"]').waitFor({ timeout: 20_000 });
    const text = (await page.locator('main').textContent()) ?? '';
    // the key's edits of the tests above, from GET /v1/organization/usage/images and /costs
    expect(text).toMatch(/images from \d+ requests/);
    expect(text).not.toMatch(/not available on this server yet|could not be loaded/);
    await shot(page, 'usage-laptop');
  }, 60_000);

  it('fits a phone', async () => {
    const phone = await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true });
    try {
      const p = await newPage(phone);
      await signIn(p);
      await p.getByLabel('Choose an image…').setInputFiles({ name: 'phone.png', mimeType: 'image/png', buffer: await makePng(128, 128) });
      await p.getByRole('application', { name: /Mask canvas/ }).waitFor();
      for (const [route, ready] of [
        ['/playground', 'Run edit'],
        ['/jobs', 'Apply'],
        ['/batches', 'Create batch'],
        ['/usage', 'Show'],
      ] as const) {
        if (route !== '/playground') {
          await p.getByRole('link', { name: route.slice(1, 2).toUpperCase() + route.slice(2) }).click();
          await p.getByRole('button', { name: ready, exact: true }).waitFor();
          await p.waitForTimeout(500);
        }
        // nothing wider than the screen: no sideways scrolling of the page itself
        const width = await p.evaluate(() => document.documentElement.scrollWidth);
        expect([route, width]).toEqual([route, PHONE.width]);
        await shot(p, `${route.slice(1)}-phone`);
      }
    } finally {
      await phone.close();
    }
    expect(pageErrors).toEqual([]);
  }, 60_000);
});
