// What the browser scripts share: Debian's chromium launched headless (no browser is
// downloaded), a check that throws, and the oidc-provider's own sign-in forms.
import { chromium } from 'playwright-core';

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

export function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/// Signs in as `login` on the forms of the oidc-provider at `provider` (login, then consent
/// when it asks).
export async function signInAtProvider(page, provider, login) {
  await page.waitForURL((url) => url.href.startsWith(provider));
  await page.waitForSelector('input[name="login"]');
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any');
  await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  if (page.url().startsWith(provider) && (await page.locator('input[name="prompt"][value="consent"]').count()) > 0) {
    await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  }
}

/// The page at `url` in German, French and Spanish (`?lang=`, which sticks for the visit):
/// each checked for its `lang`, screenshot as `<name>-<lang>.png` in `shots` and checked with
/// `accessible`; then English again.
export async function inEveryLanguage(page, url, name, shots, accessible) {
  const at = (lang) => `${url}${url.includes('?') ? '&' : '?'}lang=${lang}`;
  for (const lang of ['de', 'fr', 'es']) {
    await page.goto(at(lang));
    const shown = await page.getAttribute('html', 'lang');
    expect(shown === lang, `${name} in ${lang}: lang="${shown}"`);
    await page.screenshot({ path: `${shots}/${name}-${lang}.png`, fullPage: true });
    await accessible(page, `${name} (${lang})`);
  }
  await page.goto(at('en'));
}
