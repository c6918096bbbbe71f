// The hop of a posted sign-in answer (`response_mode = "form_post"`): the IdP's post came from
// another site, without this site's cookies; this page posts the same fields again from here,
// at once, with them. Without script, its button does the same.
const form = document.querySelector('form[data-auto-submit]');
if (form) form.submit();
