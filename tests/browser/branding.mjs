// The pages in an organisation's look, in Debian's headless chromium: the Rust test
// `browser::the_pages_wear_the_organisations_look` starts authnz with `[server.branding]` and
// runs this script with AUTHNZ_URL, SHOTS, CHROMIUM and PRIMARY (the configured colour as
// `rgb(r, g, b)`). Prints one line per step; exits non-zero on failure.
import { mkdirSync } from 'node:fs';
import { accessible } from './a11y.mjs';
import { expect, launch } from './shared.mjs';

const server = process.env.AUTHNZ_URL;
const shots = process.env.SHOTS;
mkdirSync(shots, { recursive: true });
const browser = await launch();

try {
  const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  await page.goto(`${server}/`);
  const title = await page.title();
  expect(title === 'Sign in · Example University', `title: ${title}`);
  const brand = await page.textContent('header.brand');
  expect(brand.includes('Example University'), `header: ${brand}`);
  const logo = await page.evaluate(() => {
    const img = document.querySelector('header.brand img');
    return img && img.complete && img.naturalWidth > 0;
  });
  expect(logo, 'the logo loaded');
  const link = await page.evaluate(() => getComputedStyle(document.querySelector('footer a')).color);
  expect(link === process.env.PRIMARY, `link colour: ${link}`);
  // The IdP buttons are the brands' neutral sign-in buttons, each with its mark, loaded.
  const marks = await page.evaluate(() => [...document.querySelectorAll('a.button.idp')].map((a) => {
    const icon = a.querySelector('img.icon, svg.icon');
    return {
      label: a.querySelector('span').textContent.trim(),
      loaded: icon.tagName === 'svg' || (icon.complete && icon.naturalWidth > 0),
      image: icon.tagName === 'IMG',
      background: getComputedStyle(a).backgroundColor,
    };
  }));
  expect(JSON.stringify(marks.map((m) => m.label)) === JSON.stringify(['Dev', 'Google', 'Microsoft', 'GitHub']), `buttons: ${JSON.stringify(marks)}`);
  expect(marks.every((m) => m.loaded), `every mark loaded: ${JSON.stringify(marks)}`);
  expect(marks.slice(1).every((m) => m.image), `the brands show images: ${JSON.stringify(marks)}`);
  expect(marks.every((m) => m.background === 'rgb(255, 255, 255)'), `neutral buttons: ${JSON.stringify(marks)}`);
  // Visible focus: the keyboard reaches a brand button and it wears an outline.
  await page.focus('a.button.idp[href^="/authnz/google/"]');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  expect(outline === 'solid', `focus outline: ${outline}`);
  await page.evaluate(() => document.activeElement.blur());
  const spacing = await page.evaluate(() => getComputedStyle(document.querySelector('h1')).letterSpacing);
  expect(spacing !== 'normal', `the extra stylesheet applies: ${spacing}`);
  const footer = await page.locator('footer p a').allTextContents();
  expect(JSON.stringify(footer) === JSON.stringify(['Privacy', 'Help']), `footer: ${footer}`);
  await page.screenshot({ path: `${shots}/login-branded.png` });
  await accessible(page, 'branded login page');
  console.log('ok: branded login page');
  // 200% zoom on a phone-sized screen: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 760 });
  await page.evaluate(() => { document.body.style.zoom = '2'; });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  expect(!overflow, 'no horizontal scrolling at 200% on a phone');
  await page.evaluate(() => { document.body.style.zoom = ''; });
  await page.emulateMedia({ colorScheme: 'dark' });
  const dark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  expect(dark === 'rgb(18, 20, 23)', `dark: ${dark}`);
  const tiles = await page.evaluate(() => [...document.querySelectorAll('img.icon')].map((img) => getComputedStyle(img).backgroundColor));
  expect(tiles.length === 3 && tiles.every((t) => t === 'rgb(255, 255, 255)'), `dark marks on white tiles: ${tiles}`);
  await page.screenshot({ path: `${shots}/login-branded-dark.png` });
  await accessible(page, 'branded login page, dark');
  // The dev IdP's own sign-in form, and a branded error page.
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 900, height: 700 });
  await Promise.all([page.waitForNavigation(), page.click('a.button[href^="/authnz/dev/"]')]);
  await accessible(page, 'dev IdP sign-in form');
  const submit = await page.evaluate(() => getComputedStyle(document.querySelector('button[type=submit], button')).backgroundColor);
  expect(submit === process.env.PRIMARY, `button colour: ${submit}`);
  await page.goto(`${server}/authnz/dev/callback?state=x&code=y`);
  await accessible(page, 'branded error page');
  console.log('ok: dark, phone, 200%');
  console.log('all branding steps passed');
} catch (err) {
  console.error(`FAILED: ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
