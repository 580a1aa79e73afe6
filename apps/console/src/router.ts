/**
 * History routing over a handful of paths (the API serves index.html for each of them, see
 * apps/api/src/console.ts). Links with `data-link` and same-origin `<a href="/...">` are followed
 * without a reload.
 */

export interface Route {
  name: string;
  params: Record<string, string>;
  query: URLSearchParams;
}

const PATTERNS: [RegExp, string, string[]][] = [
  [/^\/$/, 'home', []],
  [/^\/signin\/?$/, 'signin', []],
  [/^\/playground\/?$/, 'playground', []],
  [/^\/jobs\/?$/, 'jobs', []],
  [/^\/jobs\/([^/]+)\/?$/, 'job', ['id']],
  [/^\/batches\/?$/, 'batches', []],
  [/^\/batches\/([^/]+)\/?$/, 'batch', ['id']],
  [/^\/usage\/?$/, 'usage', []],
];

export function parseRoute(pathname: string, search: string): Route {
  for (const [re, name, keys] of PATTERNS) {
    const m = re.exec(pathname);
    if (!m) continue;
    const params: Record<string, string> = {};
    keys.forEach((k, i) => {
      params[k] = decodeURIComponent(m[i + 1] ?? '');
    });
    return { name, params, query: new URLSearchParams(search) };
  }
  return { name: 'notfound', params: {}, query: new URLSearchParams(search) };
}

type Listener = (route: Route) => void;
let listener: Listener | undefined;

export function startRouter(onRoute: Listener): void {
  listener = onRoute;
  window.addEventListener('popstate', () => emit());
  document.addEventListener('click', (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const a = (event.target as Element | null)?.closest?.('a');
    // in-page anchors (the skip link) and downloads are the browser's
    if (!a || a.target || a.hasAttribute('download') || a.getAttribute('href')?.startsWith('#')) return;
    const url = new URL(a.href, window.location.href);
    if (url.origin !== window.location.origin || parseRoute(url.pathname, url.search).name === 'notfound') return;
    event.preventDefault();
    navigate(url.pathname + url.search);
  });
  emit();
}

/** Goes to a console path (pushState), or replaces the current entry. */
export function navigate(path: string, opts: { replace?: boolean } = {}): void {
  if (opts.replace) window.history.replaceState(null, '', path);
  else window.history.pushState(null, '', path);
  emit();
}

function emit(): void {
  listener?.(parseRoute(window.location.pathname, window.location.search));
}
