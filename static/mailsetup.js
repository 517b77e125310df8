// Every page: what an htmx request that failed means, said where the user looks.
// Without it a 404 (a mailbox no longer shared), a 403 or a server error was dropped
// silently by htmx: the button did nothing and the page went on reading "Unsaved".
(function () {
  "use strict";

  function box() {
    return document.getElementById("request-error");
  }

  function say(text, focus) {
    const element = box();
    if (!element) return;
    element.querySelector("[data-text]").textContent = text;
    element.hidden = false;
    element.dataset.background = focus ? "" : "yes";
    // A click or a submit that failed moves the focus to why; a poll in the
    // background that failed does not take it from what the user is doing.
    if (focus) element.focus();
  }

  function why(status) {
    if (status === 404) {
      return "This is no longer here for you: it was removed, or is no longer shared with you. Reload the page to see how things are now.";
    }
    if (status === 403) {
      return "You may no longer do this: what is shared with you changed. Reload the page to see what you may do now.";
    }
    if (status === 413) {
      return "That was too large to send to the app. Choose fewer or smaller files.";
    }
    if (status === 429) {
      return "Too many requests at once: wait a moment and try again.";
    }
    return "The app could not do this (the server answered " + status + "). Try again; if it keeps failing, tell your administrator.";
  }

  // A click, a key or a submit: an event the browser made for the user. A refresh set
  // off by another request's answer (HX-Trigger: "new-emails") is an event too, but
  // one made by script.
  function userAsked(detail) {
    const config = detail.requestConfig || {};
    return Boolean(config.triggeringEvent && config.triggeringEvent.isTrusted);
  }

  document.addEventListener("htmx:responseError", function (event) {
    say(why(event.detail.xhr.status), userAsked(event.detail));
  });
  document.addEventListener("htmx:sendError", function (event) {
    say("The app could not be reached: check your connection, then try again.", userAsked(event.detail));
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    const element = box();
    // Gone once the same kind of request works again: the user's own for theirs, any
    // for a background one's (a poll's passing 502).
    if (element && !element.hidden && event.detail.successful &&
        (userAsked(event.detail) || element.dataset.background === "yes")) {
      element.hidden = true;
    }
  });
})();
