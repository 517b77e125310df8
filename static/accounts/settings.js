// The settings page: each section's one save state says "Unsaved changes" as soon as
// the user changes something in it, until the section is saved (its swap brings the
// new state, and htmx focuses it: it carries autofocus). Without JavaScript the state
// shows only what the server said.
(function () {
  function mark(event) {
    const form = event.target.closest && event.target.closest("form");
    const state = form && form.querySelector("[data-save-state]");
    if (!state || state.dataset.unsavedShown) return;
    state.dataset.unsavedShown = "1";
    state.classList.remove("saved");
    state.classList.add("unsaved");
    state.textContent = "Unsaved changes.";
  }
  document.addEventListener("input", mark);
  document.addEventListener("change", mark);
})();
