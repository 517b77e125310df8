// Every page: what an htmx request that failed means, said where the user looks.
// Without it a 404 (a mailbox no longer shared), a 403 or a server error was dropped
// silently by htmx: the button did nothing and the page went on reading "Unsaved".
(function () {
  "use strict";

  function box() {
    return document.getElementById("request-error");
  }

  function path(detail) {
    return (detail.pathInfo && detail.pathInfo.requestPath) || "";
  }

  function say(text, focus, source) {
    const element = box();
    if (!element) return;
    // A user's own error stays until they act: a background failure after it does not
    // take its place.
    if (!focus && !element.hidden && element.dataset.background !== "yes") return;
    element.querySelector("[data-text]").textContent = text;
    element.hidden = false;
    element.dataset.background = focus ? "" : "yes";
    element.dataset.source = source;
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
    say(why(event.detail.xhr.status), userAsked(event.detail), path(event.detail));
  });
  document.addEventListener("htmx:sendError", function (event) {
    say("The app could not be reached: check your connection, then try again.",
        userAsked(event.detail), path(event.detail));
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    const element = box();
    // Gone once the user's own next request works, or, for a background failure (a
    // poll's passing 502), once that same address answers again: another mailbox's
    // status answering says nothing of this one's.
    if (element && !element.hidden && event.detail.successful && (userAsked(event.detail) ||
        (element.dataset.background === "yes" && element.dataset.source === path(event.detail)))) {
      element.hidden = true;
    }
  });
})();
