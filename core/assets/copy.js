// The copy buttons of authnz's pages: a button's `data-copy` names the input whose value it
// copies; the element `#copied` (a live region) says that it did, in its `data-done` words.
for (const button of document.querySelectorAll('button[data-copy]')) {
  button.addEventListener('click', async () => {
    const input = document.getElementById(button.dataset.copy);
    const status = document.getElementById('copied');
    try {
      await navigator.clipboard.writeText(input.value);
    } catch {
      input.select();
      document.execCommand('copy');
    }
    if (status) status.textContent = status.dataset.done || 'Copied.';
  });
}
