// The settings page: each section shows one save state. It says "Unsaved changes" as
// soon as the user changes something in a form, until that form is saved (its swap
// brings the new state, and htmx focuses it: it carries autofocus). A section with two
// forms ("Send emails" and its signature) keeps one "Saved.": the newer one. Without
// JavaScript the state shows only what the server said.
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
  function oneSaved(root) {
    if (root === document.body || !root.querySelector) return;
    const fresh = root.matches("[data-save-state].saved")
      ? root : root.querySelector("[data-save-state].saved");
    const section = fresh && fresh.closest("section");
    if (!section) return;
    for (const older of section.querySelectorAll("[data-save-state].saved")) {
      if (older === fresh) continue;
      older.classList.remove("saved");
      older.textContent = "";
    }
  }
  // "Download mail for period": the list beside the switch is disabled while the
  // switch is off, and reads "All" (every email, what a save then gets); turned on,
  // it offers the periods, a week first. The server renders the same state.
  function period(event) {
    const toggle = event.target;
    if (!toggle.matches || !toggle.matches(".field.period input[role=switch]")) return;
    const list = toggle.closest(".field.period").querySelector("select");
    if (!list) return;
    let all = list.querySelector('option[value="all"]');
    if (toggle.checked) {
      list.disabled = false;
      if (list.value === "all") list.value = "1w";
      if (all) all.remove();
    } else {
      if (!all) {
        all = new Option("All", "all");
        list.prepend(all);
      }
      list.value = "all";
      list.disabled = true;
    }
  }
  document.addEventListener("change", period);
  document.addEventListener("input", mark);
  document.addEventListener("change", mark);
  if (window.htmx) htmx.onLoad(oneSaved);
})();
