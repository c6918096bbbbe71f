// End-to-end walk through authnz in Debian's headless chromium (playwright-core drives it; no
// browser is downloaded). The Rust test `browser::a_person_signs_in_in_a_real_browser` starts
// authnz and the oidc-provider, then runs this script with:
//   AUTHNZ_URL     authnz's public URL (IdPs `corp` and `lab` configured against the provider)
//   PROVIDER_URL   the oidc-provider's issuer
//   SHOTS          where to write the screenshots
//   CHROMIUM       the browser (default /usr/bin/chromium)
// Prints one line per step; exits non-zero (with a screenshot of the failing page) on failure.
import { mkdirSync } from 'node:fs';
import { accessible } from './a11y.mjs';
import { expect, inEveryLanguage, launch, signInAtProvider as signInAt } from './shared.mjs';

const server = process.env.AUTHNZ_URL;
const provider = process.env.PROVIDER_URL;
const shots = process.env.SHOTS;
mkdirSync(shots, { recursive: true });

const browser = await launch();

let page;
async function step(name, fn) {
  try {
    await fn();
    console.log(`ok: ${name}`);
  } catch (err) {
    if (page) await page.screenshot({ path: `${shots}/failed-${name.replace(/[^a-z0-9]+/gi, '-')}.png`, fullPage: true });
    console.error(`FAILED: ${name}: ${err.stack || err}`);
    await browser.close();
    process.exit(1);
  }
}

/// Signs in on the oidc-provider's own forms, in the page of the walk.
function signInAtProvider(login) {
  return signInAt(page, provider, login);
}

const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
page = await context.newPage();

await step('login page lists the IdPs in config order', async () => {
  await page.goto(`${server}/`);
  const buttons = await page.locator('nav a.button span').allTextContents();
  expect(JSON.stringify(buttons) === JSON.stringify(['Corp SSO', 'Lab']), `buttons: ${buttons}`);
  await page.screenshot({ path: `${shots}/login.png` });
  await accessible(page, 'login page');
});

await step('the login page in German, French and Spanish, as the browser asks', async () => {
  for (const [locale, lang, title] of [['de-DE', 'de', 'Anmelden'], ['fr-FR', 'fr', 'Connexion'], ['es-ES', 'es', 'Iniciar sesión']]) {
    const other = await browser.newContext({ viewport: { width: 900, height: 760 }, locale });
    const localized = await other.newPage();
    await localized.goto(`${server}/`);
    const h1 = await localized.textContent('h1');
    expect(h1 === title, `${locale}: ${h1}`);
    expect((await localized.getAttribute('html', 'lang')) === lang, `${locale}: lang attribute`);
    await localized.screenshot({ path: `${shots}/login-${lang}.png` });
    await accessible(localized, `login page (${lang})`);
    await other.close();
  }
});

await step('keyboard only: Tab to the first button and press Enter', async () => {
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => document.activeElement?.querySelector('span')?.textContent);
  expect(focused === 'Corp SSO', `focused: ${focused}`);
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
  await page.screenshot({ path: `${shots}/provider-login.png` });
});

await step('sign in at the provider and land on the account page', async () => {
  await signInAtProvider('alice');
  await page.waitForURL(`${server}/`);
  const name = await page.textContent('#username');
  expect(name === 'alice', `username: ${name}`);
  await page.screenshot({ path: `${shots}/account.png`, fullPage: true });
  await accessible(page, 'account page');
});

await step('the account page in German, French and Spanish', async () => {
  await inEveryLanguage(page, `${server}/`, 'account', shots, accessible);
  expect((await page.textContent('h1')) === 'Your account', 'English again');
});

await step('connect a second IdP from the account page', async () => {
  await Promise.all([page.waitForNavigation(), page.click('button:has-text("Connect Lab")')]);
  if (page.url().startsWith(provider)) await signInAtProvider('alice');
  await page.waitForURL(`${server}/`);
  const rows = await page.locator('#identities tbody tr').count();
  expect(rows === 2, `identities: ${rows}`);
});

await step('disconnect it after confirming', async () => {
  await Promise.all([page.waitForNavigation(), page.click('#identities tr:has-text("lab") a:has-text("Disconnect")')]);
  await page.screenshot({ path: `${shots}/disconnect.png` });
  await accessible(page, 'disconnect page');
  await Promise.all([page.waitForNavigation(), page.click('button.disconnect')]);
  await page.waitForURL(`${server}/`);
  const rows = await page.locator('#identities tbody tr').count();
  expect(rows === 1, `identities after disconnect: ${rows}`);
});

await step('end the session of another browser from the account page', async () => {
  const other = await browser.newContext({ viewport: { width: 390, height: 760 }, userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1' });
  const phone = await other.newPage();
  const mine = page;
  page = phone;
  await phone.goto(`${server}/`);
  await Promise.all([phone.waitForNavigation(), phone.click('nav a.button:has-text("Corp SSO")')]);
  await signInAtProvider('alice');
  await phone.waitForURL(`${server}/`);
  page = mine;
  await page.reload();
  const rows = page.locator('#session-list tbody tr');
  expect((await rows.count()) === 2, `sessions: ${await rows.count()}`);
  const current = await page.textContent('#session-list tr.current');
  expect(current.includes('(this browser)'), `current row: ${current}`);
  await page.screenshot({ path: `${shots}/sessions.png`, fullPage: true });
  await accessible(page, 'account page with sessions');
  // Keyboard: focus the other session's button and press Enter.
  await page.focus('#session-list tr:has-text("Safari on iOS") button.end-session');
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
  expect((await page.locator('#session-list tbody tr').count()) === 1, 'one session left');
  // Each browser's own cookies (the page's CSP allows no fetch of its own).
  const status = (await other.request.get(`${server}/api/users/me`)).status();
  expect(status === 401, `the other browser's /api/users/me: ${status}`);
  const mineStatus = (await context.request.get(`${server}/api/users/me`)).status();
  expect(mineStatus === 200, `this browser's /api/users/me: ${mineStatus}`);
  await other.close();
});

await step('create an API key on the account page, copy it, delete it', async () => {
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server });
  await page.fill('#key-name', 'laptop scripts');
  await page.selectOption('#key-expiry', '30');
  await Promise.all([page.waitForNavigation(), page.click('#create-key')]);
  const secret = await page.inputValue('#new-key');
  expect(secret.startsWith('authnz_'), `new key: ${secret}`);
  await page.screenshot({ path: `${shots}/api-key.png` });
  await accessible(page, 'new API key page');
  await page.click('#copy-key');
  await page.waitForSelector('#copied:has-text("Copied.")');
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  expect(copied === secret, 'the clipboard holds the key');
  // As a script would use it: no cookie, the key alone.
  const me = await fetch(`${server}/api/users/me`, { headers: { Authorization: `Bearer ${secret}` } });
  expect(me.status === 200, `the key works: ${me.status}`);
  await Promise.all([page.waitForNavigation(), page.click('a:has-text("Back to your account")')]);
  expect((await page.locator('#key-list tbody tr').count()) === 1, 'one key listed');
  expect(!(await page.content()).includes(secret), 'the account page never shows the secret');
  await Promise.all([page.waitForNavigation(), page.click('#key-list button.delete-key')]);
  expect((await page.locator('#key-list').count()) === 0, 'no key left');
  const after = await fetch(`${server}/api/users/me`, { headers: { Authorization: `Bearer ${secret}` } });
  expect(after.status === 401, `a deleted key: ${after.status}`);
});

await step('the admin page: every IdP, the logins, a reload', async () => {
  await Promise.all([page.waitForNavigation(), page.click('#administration')]);
  const rows = await page.locator('#idp-status tbody tr').count();
  expect(rows === 2, `IdP rows: ${rows}`);
  const corp = await page.textContent('#idp-status tr:has-text("corp")');
  expect(corp.includes('ready'), `corp: ${corp}`);
  const generation = await page.textContent('#generation');
  await Promise.all([page.waitForNavigation(), page.click('#reload')]);
  const after = await page.textContent('#generation');
  expect(Number(after) === Number(generation) + 1, `generation ${generation} -> ${after}`);
  expect((await page.textContent('#reload-result')).includes('succeeded'), 'the reload succeeded');
  await page.screenshot({ path: `${shots}/admin.png`, fullPage: true });
  await accessible(page, 'admin page');
  await inEveryLanguage(page, `${server}/authnz/admin`, 'admin', shots, accessible);
  await Promise.all([page.waitForNavigation(), page.click('a:has-text("Your account")')]);
});

await step('dark mode follows the system setting', async () => {
  await page.emulateMedia({ colorScheme: 'dark' });
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  expect(background === 'rgb(18, 20, 23)', `dark background: ${background}`);
  await page.screenshot({ path: `${shots}/account-dark.png`, fullPage: true });
  await accessible(page, 'account page, dark');
  await page.emulateMedia({ colorScheme: 'light' });
  const light = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  expect(light !== background, `light background: ${light}`);
});

await step('a failed login shows an escaped error page', async () => {
  await page.goto(`${server}/authnz/corp/callback?code=x&state=%3Cscript%3Ealert(1)%3C%2Fscript%3E`);
  const text = await page.textContent('main');
  expect(text.includes('unknown or was already used'), `error page: ${text}`);
  expect((await page.locator('main script').count()) === 0, 'markup from the URL was rendered');
  await page.screenshot({ path: `${shots}/error.png` });
  await accessible(page, 'error page');
});

await step('log out (and on to the provider to end its session too)', async () => {
  await page.goto(`${server}/`);
  await Promise.all([page.waitForNavigation(), page.click('#logout')]);
  expect(page.url().startsWith(`${provider}/session/end`), `after logout: ${page.url()}`);
  await page.goto(`${server}/`);
  expect((await page.locator('nav a.button').count()) === 2, 'the login page is back');
});

await step('Swagger UI: programmatic login, then /api/users/me in the same browser', async () => {
  const swagger = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  page = await swagger.newPage();
  await page.goto(`${server}/docs`);
  const login = page.locator('.opblock-get:has(.opblock-summary-path[data-path="/authnz/{idp}/login"])');
  await login.locator('.opblock-summary').click();
  await login.locator('button.try-out__btn').click();
  await login.locator('input[placeholder="idp"]').fill('corp');
  await login.locator('button.execute').click();
  const body = login.locator('.live-responses-table .response-col_description pre').first();
  await body.waitFor();
  const redirect = JSON.parse(await body.textContent()).redirect_uri;
  expect(redirect.startsWith(provider), `redirect_uri: ${redirect}`);
  await page.screenshot({ path: `${shots}/swagger-login.png` });
  await page.goto(redirect);
  await signInAtProvider('alice');
  await page.waitForURL(`${server}/`);
  await page.goto(`${server}/docs`);
  const me = page.locator('.opblock-get:has(.opblock-summary-path[data-path="/api/users/me"])');
  await me.locator('.opblock-summary').click();
  await me.locator('button.try-out__btn').click();
  await me.locator('button.execute').click();
  const status = me.locator('.live-responses-table tr.response .response-col_status').first();
  await status.waitFor();
  const code = (await status.textContent()).trim();
  const answer = await me.locator('.live-responses-table .response-col_description pre').first().textContent();
  expect(code === '200', `status ${code}: ${answer}`);
  expect(JSON.parse(answer).username === 'alice', answer);
  await page.screenshot({ path: `${shots}/swagger-me.png` });
});

await step('an app sends the person to sign in and back, and out again through the provider', async () => {
  // `[apps.docs]` is this server's own /docs: any URL under it is a `next` an app may give.
  const app = `${server}/docs/`;
  const onApp = (url) => url.href.startsWith(app);
  const visit = await browser.newContext({ viewport: { width: 900, height: 760 } });
  page = await visit.newPage();
  await page.goto(`${server}/?next=${encodeURIComponent(app)}`);
  await Promise.all([page.waitForNavigation(), page.click('nav a.button:has-text("Corp SSO")')]);
  await signInAtProvider('alice');
  await page.waitForURL(onApp);
  await page.goto(`${server}/authnz/logout?next=${encodeURIComponent(app)}`);
  await page.screenshot({ path: `${shots}/logout.png` });
  await accessible(page, 'logout page');
  await Promise.all([page.waitForNavigation(), page.click('#logout')]);
  expect(page.url().startsWith(`${provider}/session/end`), `after sign-out: ${page.url()}`);
  await Promise.all([page.waitForNavigation(), page.click('button[name="logout"][value="yes"]')]);
  await page.waitForURL(onApp);
  const me = await page.evaluate(async (url) => (await fetch(url)).status, `${server}/api/users/me`);
  expect(me === 401, `/api/users/me after the logout: ${me}`);
});

await step('phone-sized login page', async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 760 }, isMobile: true });
  page = await phone.newPage();
  await page.goto(`${server}/`);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  expect(width <= 390, `horizontal scrolling on a phone: ${width}px`);
  await page.screenshot({ path: `${shots}/login-phone.png` });
});

await browser.close();
console.log('all browser steps passed');
