// Writing an email. Enter in a one-line field (To, Subject) does not send it: the browser
// submits a form on Enter, and an email went out without its text that way; only the
// Send button sends. And leaving the page with something written asks first (the
// browser's own "Leave site?"), until the email is sent. Without JavaScript the page
// works as before.
(function () {
  let written = false;

  function compose(node) {
    return node && node.closest ? node.closest("form#compose") : null;
  }
  function hasText(form) {
    for (const field of form.querySelectorAll("input[type=text], input:not([type]), textarea")) {
      if (field.value.trim()) return true;
    }
    return false;
  }

  document.addEventListener("keydown", function (event) {
    const field = event.target;
    if (event.key !== "Enter" || event.isComposing || !compose(field)) return;
    if (field.tagName === "INPUT" && field.type !== "submit" && field.type !== "file") {
      event.preventDefault();
    }
  });
  document.addEventListener("input", function (event) {
    if (compose(event.target)) written = true;
  });
  // Sent: the server answers with where to go (HX-Redirect), read here before htmx
  // goes there. A refusal, an error or no answer at all leaves the text unsent, and
  // the question stands. Without htmx, the form's own submit leaves the page.
  document.addEventListener("htmx:beforeOnLoad", function (event) {
    const xhr = event.detail.xhr;
    if (compose(event.detail.elt) && xhr && xhr.status < 400 && xhr.getResponseHeader("HX-Redirect")) {
      written = false;
    }
  });
  document.addEventListener("submit", function (event) {
    if (compose(event.target) && !event.defaultPrevented) written = false;
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    const form = document.querySelector("form#compose");
    if (form && compose(event.target) === form) written = hasText(form);
  });
  window.addEventListener("beforeunload", function (event) {
    if (!written) return;
    event.preventDefault();
    event.returnValue = "";
  });
})();
