// A sign-in whose IdP posts its answer (`response_mode = "form_post"`), in Debian's headless
// chromium: the Rust test `browser::a_posted_answer_signs_in_a_real_browser` starts authnz and
// the oidc-provider and runs this script with AUTHNZ_URL, PROVIDER_URL, SHOTS and CHROMIUM.
import { accessible } from './a11y.mjs';
import { expect, launch, signInAtProvider } from './shared.mjs';

const server = process.env.AUTHNZ_URL;
const provider = process.env.PROVIDER_URL;
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 760 } });
  page.setDefaultTimeout(15000);
  const posts = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && request.url().startsWith(`${server}/authnz/corp/callback`)) {
      posts.push(request);
    }
  });
  await page.goto(`${server}/`);
  await Promise.all([page.waitForNavigation(), page.click('a.button.idp:has-text("Corp")')]);
  await signInAtProvider(page, provider, 'alice');
  await page.waitForURL(`${server}/`);
  expect((await page.title()).startsWith('Your account'), `landed on: ${await page.title()}`);
  const sites = await Promise.all(posts.map(async (post) => (await post.allHeaders())['sec-fetch-site']));
  // Both ports are one site (127.0.0.1) here; what tells them apart is the origin.
  expect(JSON.stringify(sites) === JSON.stringify(['same-site', 'same-origin']), `the provider's post, then the hop's: ${sites}`);
  await accessible(page, 'account page after a posted answer');
  console.log('ok: signed in through a posted answer and its hop');

  // Without this origin's script (blocked here): the hop page's own button, checked.
  const plain = await browser.newContext({ viewport: { width: 900, height: 760 } });
  await plain.route('**/authnz/assets/continue.js', (route) => route.abort());
  const still = await plain.newPage();
  still.setDefaultTimeout(15000);
  await still.goto(`${server}/`);
  await Promise.all([still.waitForNavigation(), still.click('a.button.idp:has-text("Corp")')]);
  await signInAtProvider(still, provider, 'grace');
  await still.waitForURL(`${server}/authnz/corp/callback`);
  expect((await still.title()) === 'Signing you in', `the hop page: ${await still.title()}`);
  await accessible(still, 'posted answer hop page');
  await Promise.all([still.waitForNavigation(), still.click('button[type=submit]')]);
  await still.waitForURL(`${server}/`);
  expect((await still.title()).startsWith('Your account'), `without script: ${await still.title()}`);
  console.log('ok: without the script, its button');

  // A first sign-in that asks before it makes an account (require_create_confirmation).
  const fresh = await browser.newPage({ viewport: { width: 900, height: 760 } });
  fresh.setDefaultTimeout(15000);
  await fresh.goto(`${server}/`);
  await Promise.all([fresh.waitForNavigation(), fresh.click('a.button.idp:has-text("Lab")')]);
  await signInAtProvider(fresh, provider, 'hedy');
  await fresh.waitForURL((url) => url.href.startsWith(`${server}/authnz/lab/create_user`));
  await accessible(fresh, 'sign-up confirmation page');
  await Promise.all([fresh.waitForNavigation(), fresh.click('#create')]);
  expect((await fresh.title()).startsWith('Your account'), `after confirming: ${await fresh.title()}`);
  console.log('ok: the sign-up confirmation page');
  console.log('all form_post steps passed');
} catch (err) {
  console.error(`FAILED: ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
