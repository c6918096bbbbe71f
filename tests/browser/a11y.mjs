// The accessibility check of every page the browser tests visit: axe-core (pinned in
// package.json), run in the page as it is (evaluated by the browser's debugging protocol, so the
// page's CSP stays untouched). A serious or critical violation fails the step; every finding is
// printed, for the record.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const source = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export async function accessible(page, name) {
  await page.evaluate(source);
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ['violations'], runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] }),
  );
  const findings = result.violations.map((v) => `${v.impact} ${v.id} (${v.nodes.length}): ${v.help}`);
  console.log(`a11y: ${name}: ${findings.length ? findings.join('; ') : 'no violations'}`);
  const blocking = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (blocking.length) {
    const detail = blocking
      .map((v) => `${v.impact} ${v.id}: ${v.help}\n${v.nodes.map((n) => `  ${n.target.join(' ')}: ${n.failureSummary}`).join('\n')}`)
      .join('\n');
    throw new Error(`accessibility violations on the ${name}:\n${detail}`);
  }
}
