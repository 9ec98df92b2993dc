// The demo's whole client: no framework, no build step. The access token lives in the
// variable below and nowhere else (no localStorage, no cookie); the refresh token is the
// auth service's HttpOnly cookie, which this script can neither read nor write: the browser
// sends it with the credentialed calls to /refresh and /logout.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  /** The auth service's public URL, from /demo/config.json. */
  let authUrl = '';
  /** The access token, in memory only: a reload forgets it, and the cookie brings it back. */
  let accessToken = null;
  /** The request header the auth service demands with its cookie (the CSRF rule). */
  const CSRF_HEADER = { 'x-requested-with': 'posts-demo' };

  function setStatus(text, ok) {
    $('status').textContent = text;
    $('status').className = ok ? 'ok' : '';
  }

  function show(state) {
    for (const id of ['loading', 'signed-out', 'signed-in']) {
      $(id).hidden = id !== state;
    }
    document.body.dataset.state = state;
  }

  /** The username claim of the access token (decoded for display only; never trusted). */
  function usernameOf(token) {
    try {
      const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(payload)).username || '';
    } catch {
      return '';
    }
  }

  /** A POST to the auth service: JSON, with the cookie, with the CSRF header. */
  function authPost(path, body) {
    return fetch(authUrl + path, {
      method: 'POST',
      credentials: 'include',
      headers: { 'content-type': 'application/json', ...CSRF_HEADER },
      body: JSON.stringify(body || {}),
    });
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      return body.message || body.error || response.statusText;
    } catch {
      return response.statusText;
    }
  }

  /** Trades the cookie for a new access token (the cookie rotates). */
  async function refresh() {
    let response;
    try {
      response = await authPost('/refresh', {});
    } catch {
      accessToken = null;
      return false;
    }
    if (!response.ok) {
      accessToken = null;
      return false;
    }
    accessToken = (await response.json()).access_token;
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
    return true;
  }

  /** A call to the posts API with the access token; an expired token is refreshed once. */
  async function api(method, path, body) {
    const call = () => fetch(path, {
      method,
      headers: {
        authorization: 'Bearer ' + accessToken,
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    let response = await call();
    if (response.status === 401) {
      const problem = await response.clone().json().catch(() => ({}));
      if (problem.error === 'token_expired' && await refresh()) {
        response = await call();
      }
    }
    if (response.status === 401) {
      signedOut('Your session has ended. Please log in again.');
    }
    return response;
  }

  function renderPosts(posts) {
    const list = $('posts');
    list.replaceChildren();
    for (const post of posts) {
      const item = document.createElement('li');
      item.className = 'post';
      const time = document.createElement('time');
      time.textContent = post.created_at;
      const text = document.createElement('span');
      text.textContent = post.text; // text, never HTML
      item.append(time, text);
      list.append(item);
    }
  }

  async function loadPosts() {
    const response = await api('GET', '/posts');
    if (response.ok) {
      renderPosts((await response.json()).posts);
    }
  }

  async function signedIn() {
    $('who').textContent = usernameOf(accessToken);
    show('signed-in');
    await loadPosts();
  }

  function signedOut(message) {
    accessToken = null;
    $('posts').replaceChildren();
    show('signed-out');
    if (message) setStatus(message);
  }

  async function onSignup(event) {
    event.preventDefault();
    const username = $('signup-username').value;
    const password = $('signup-password').value;
    try {
      const response = await fetch(authUrl + '/register', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username, password }),
      });
      if (response.status === 201) {
        setStatus('Signed up as ' + username + '. Now log in.', true);
        $('login-username').value = username;
        $('signup-form').reset();
      } else {
        setStatus('Sign-up failed: ' + await errorOf(response));
      }
    } catch {
      setStatus('The auth service cannot be reached from this page.');
    }
  }

  async function onLogin(event) {
    event.preventDefault();
    const username = $('login-username').value;
    const password = $('login-password').value;
    try {
      const response = await authPost('/login?cookie=true', { username, password });
      if (!response.ok) {
        setStatus('Login failed: ' + await errorOf(response));
        return;
      }
      accessToken = (await response.json()).access_token;
      $('login-form').reset();
      setStatus('Logged in.', true);
      await signedIn();
    } catch {
      setStatus('The auth service cannot be reached from this page.');
    }
  }

  async function onPost(event) {
    event.preventDefault();
    const text = $('post-text').value;
    const response = await api('POST', '/posts', { text });
    if (response.status === 201) {
      $('post-text').value = '';
      setStatus('Posted.', true);
      await loadPosts();
    } else if (response.status !== 401) {
      setStatus('Posting failed: ' + await errorOf(response));
    }
  }

  async function onLogout() {
    try {
      await authPost('/logout', {});
    } catch {
      // Signed out here either way; the session ends when its refresh token expires.
    }
    signedOut('Logged out.');
  }

  async function start() {
    $('signup-form').addEventListener('submit', onSignup);
    $('login-form').addEventListener('submit', onLogin);
    $('post-form').addEventListener('submit', onPost);
    $('logout').addEventListener('click', onLogout);
    try {
      const config = await (await fetch('/demo/config.json')).json();
      authUrl = config.auth_url;
    } catch {
      setStatus('The page could not load its configuration.');
      return;
    }
    // Silent refresh: a reload finds the session through the cookie.
    if (await refresh()) {
      await signedIn();
    } else {
      signedOut();
    }
    document.body.dataset.ready = 'true';
  }

  start();
})();
