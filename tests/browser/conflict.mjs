// A first sign-in whose email address already has an account, in Debian's headless chromium:
// the Rust test `browser::a_person_whose_address_has_an_account_connects_the_new_idp` starts
// authnz (IdPs `corp` and `lab`, each asking who signs in) and the oidc-provider, where
// `alice-lab` has alice's address, then runs this script with AUTHNZ_URL, PROVIDER_URL, SHOTS
// and CHROMIUM. Prints one line per step; exits non-zero on failure.
import { mkdirSync } from 'node:fs';
import { accessible } from './a11y.mjs';
import { expect, inEveryLanguage, launch, signInAtProvider } from './shared.mjs';

const server = process.env.AUTHNZ_URL;
const provider = process.env.PROVIDER_URL;
const shots = process.env.SHOTS;
mkdirSync(shots, { recursive: true });
const browser = await launch();

async function signIn(page, label, login) {
  await Promise.all([page.waitForNavigation(), page.click(`a.button.idp:has-text("${label}")`)]);
  await signInAtProvider(page, provider, login);
  await page.waitForURL((url) => url.href.startsWith(server));
}

try {
  // Alice's account, made with Corp.
  const first = await browser.newPage({ viewport: { width: 900, height: 760 } });
  await first.goto(`${server}/`);
  await signIn(first, 'Corp', 'alice');
  expect((await first.title()).startsWith('Your account'), `account: ${await first.title()}`);
  await first.close();

  // On another browser she tries Lab first: the page says why and how on.
  const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const page = await context.newPage();
  await page.goto(`${server}/`);
  await signIn(page, 'Lab', 'alice-lab');
  expect(page.url().includes('/authnz/lab/email_in_use?intent='), `refused to: ${page.url()}`);
  const text = await page.textContent('main');
  expect(text.includes('alice@example.test'), `the address: ${text}`);
  const ways = await page.locator('nav a.button.idp span').allTextContents();
  expect(JSON.stringify(ways) === JSON.stringify(['Corp']), `the account's way in: ${ways}`);
  await page.screenshot({ path: `${shots}/email-in-use.png` });
  await accessible(page, 'email in use page');
  await inEveryLanguage(page, page.url(), 'email-in-use', shots, accessible);
  console.log('ok: the refusal says what to do');

  // With the keyboard: the Corp button, then the offer to connect Lab.
  await page.focus('nav a.button.idp');
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
  await signInAtProvider(page, provider, 'alice');
  await page.waitForURL((url) => url.href.startsWith(`${server}/authnz/lab/connect_after`));
  expect((await page.title()) === 'Connect Lab?', `offer: ${await page.title()}`);
  await page.screenshot({ path: `${shots}/connect-after.png` });
  await accessible(page, 'offer to connect page');
  console.log('ok: signed in as before, the offer to connect');

  await Promise.all([page.waitForNavigation(), page.click('#connect')]);
  await signInAtProvider(page, provider, 'alice-lab');
  await page.waitForURL((url) => url.href.startsWith(server));
  const me = await (await context.request.get(`${server}/api/users/me`)).json();
  const linked = me.identities.map((identity) => `${identity.idp}:${identity.subject}`);
  expect(JSON.stringify(linked) === JSON.stringify(['corp:alice', 'lab:alice-lab']), `linked: ${linked}`);
  console.log('ok: Lab connected to the account');
  console.log('all conflict steps passed');
} catch (err) {
  console.error(`FAILED: ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
