import './styles.css';
import { setUnauthorizedHandler, storedKey, storeKey } from './api';
import { h, replace } from './dom';
import { forgetModels } from './models';
import { batchesPage, batchPage } from './pages/batches';
import { jobPage } from './pages/job';
import { jobsPage } from './pages/jobs';
import { playgroundPage } from './pages/playground';
import { signinPage } from './pages/signin';
import { usagePage } from './pages/usage';
import { navigate, type Route, startRouter } from './router';

/**
 * The console's shell: a header with the pages, the page itself in <main>, one polite live region
 * for announcements. Each page gets an AbortSignal that ends its streams and timers when the user
 * goes elsewhere.
 */

const NAV: [string, string, string[]][] = [
  ['/playground', 'Playground', ['playground', 'home']],
  ['/jobs', 'Jobs', ['jobs', 'job']],
  ['/batches', 'Batches', ['batches', 'batch']],
  ['/usage', 'Usage', ['usage']],
];

const app = document.getElementById('app')!;
const main = h('main', { id: 'main', tabindex: -1 });
const nav = h('nav', { 'aria-label': 'Console' });
const account = h('div', { class: 'account' });
const announcer = h('div', { id: 'announcer', class: 'visually-hidden', role: 'status', 'aria-live': 'polite', 'aria-atomic': 'true' });
replace(
  app,
  h('header', { class: 'top' }, h('a', { class: 'brand', href: '/playground' }, h('img', { src: '/favicon.svg', alt: '', width: 24, height: 24 }), h('span', null, 'Image edits')), nav, account),
  main,
  announcer,
);

let current: AbortController | null = null;
let firstRender = true;

function signOut(): void {
  storeKey(null);
  forgetModels();
  navigate('/signin', { replace: true });
}
setUnauthorizedHandler(() => {
  if (storedKey()) signOut();
});

function render(route: Route): void {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const key = storedKey();

  if (!key && route.name !== 'signin') {
    const back = window.location.pathname + window.location.search;
    navigate(`/signin${back !== '/' ? `?next=${encodeURIComponent(back)}` : ''}`, { replace: true });
    return;
  }
  replace(
    nav,
    key
      ? h(
          'ul',
          null,
          ...NAV.map(([href, label, names]) => h('li', null, h('a', { href, 'aria-current': names.includes(route.name) ? 'page' : null }, label))),
        )
      : null,
  );
  replace(account, key ? [h('span', { class: 'key', title: 'The API key of this tab' }, `…${key.slice(-4)}`), h('button', { type: 'button', class: 'small', onclick: signOut }, 'Sign out')] : null);

  main.replaceChildren();
  const signal = controller.signal;
  const page = (): Promise<void> | void => {
    switch (route.name) {
      case 'signin':
        return signinPage(main, () => {
          const next = route.query.get('next');
          navigate(next?.startsWith('/') && !next.startsWith('//') ? next : '/playground', { replace: true });
        });
      case 'home':
      case 'playground':
        return playgroundPage(main, signal);
      case 'jobs':
        return jobsPage(main, route, signal);
      case 'job':
        return jobPage(main, route.params.id ?? '', signal);
      case 'batches':
        return batchesPage(main, signal);
      case 'batch':
        return batchPage(main, route.params.id ?? '', signal);
      case 'usage':
        return usagePage(main, route, signal);
      default:
        main.append(h('h1', { tabindex: -1 }, 'Not found'), h('p', null, 'No such page. ', h('a', { href: '/playground' }, 'Go to the playground'), '.'));
    }
  };
  const titles: Record<string, string> = { signin: 'Sign in', home: 'Playground', playground: 'Playground', jobs: 'Jobs', job: 'Job', batches: 'Batches', batch: 'Batch', usage: 'Usage' };
  document.title = `${titles[route.name] ?? 'Not found'} · Image edits console`;
  const done = page();
  // after a navigation, focus goes to the new page's heading (screen readers read where they are)
  if (!firstRender && route.name !== 'signin') main.querySelector<HTMLElement>('h1')?.focus();
  firstRender = false;
  void Promise.resolve(done).catch((err: unknown) => {
    if (!signal.aborted) console.error(err);
  });
}

startRouter(render);
