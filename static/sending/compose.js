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
  // Sent (or sent back with a mistake to correct): whatever the answer, the server has
  // the text; a form sent back with mistakes holds it again below.
  document.addEventListener("submit", function (event) {
    if (compose(event.target)) written = false;
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
