import { ApiError, errorFromResponse, storeKey, toApiError } from '../api';
import { errorBox, field, h, replace } from '../dom';

/**
 * Sign in with an API key: it is checked against `GET /v1/models` and kept in sessionStorage (this
 * tab only, gone when it closes). Nothing else is stored.
 */
export function signinPage(root: HTMLElement, onSignedIn: () => void): void {
  const key = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off', required: true, name: 'api-key', placeholder: 'sk-…' });
  const messages = h('div', { 'aria-live': 'assertive' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h(
    'form',
    { class: 'card signin', 'aria-labelledby': 'signin-heading' },
    h('h1', { id: 'signin-heading', tabindex: -1 }, 'Sign in'),
    h('p', null, 'Paste an API key of this service. It stays in this tab (sessionStorage) and goes with every call to the API; closing the tab forgets it.'),
    field('API key', key, h('span', null, 'Create one with ', h('code', null, 'npm run keys -- create --name me'), '.')),
    messages,
    h('div', { class: 'actions' }, submit),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = key.value.trim();
    if (!value) {
      replace(messages, errorBox('Paste a key first.'));
      key.focus();
      return;
    }
    submit.disabled = true;
    try {
      const res = await fetch('/v1/models', { headers: { authorization: `Bearer ${value}` } });
      if (!res.ok) throw await errorFromResponse(res);
      storeKey(value);
      onSignedIn();
    } catch (err) {
      const ae = toApiError(err);
      replace(messages, errorBox(ae instanceof ApiError && ae.status === 401 ? 'That key was refused.' : 'Could not sign in.', ae.describe()));
      key.focus();
    } finally {
      submit.disabled = false;
    }
  });
  root.append(form);
  key.focus();
}
