// The wizard's "Add new server" form: choosing a security fills in its usual port,
// and typing a well-known port picks its security. Both stay editable. Runs again
// after htmx swaps the form in.
(function () {
  function wire(form) {
    if (form.dataset.wired) return;
    form.dataset.wired = "1";
    ["imap", "smtp"].forEach(function (kind) {
      var ports = JSON.parse(form.dataset[kind + "Ports"]);
      var security = form.querySelector('[data-security-for="' + kind + '"]');
      var port = form.querySelector('[data-port-for="' + kind + '"]');
      if (!security || !port) return;
      var known = Object.values(ports).map(String);
      security.addEventListener("change", function () {
        // Only a usual port follows the security; a custom one is the user's.
        if (port.value === "" || known.indexOf(port.value) !== -1) port.value = ports[security.value];
      });
      port.addEventListener("input", function () {
        var byPort = { 993: "ssl", 465: "ssl", 143: "starttls", 587: "starttls" };
        if (byPort[port.value]) security.value = byPort[port.value];
      });
    });
    var type = form.querySelector('[name="service_type"]');
    function toggle() {
      var exchange = type.value === "exchange";
      form.querySelectorAll(".field").forEach(function (field) {
        var name = field.dataset.field;
        if (/^(imap|smtp)_/.test(name)) field.hidden = exchange;
        if (name === "exchange_url") field.hidden = !exchange;
      });
    }
    if (type) { type.addEventListener("change", toggle); toggle(); }
  }
  function scan() { document.querySelectorAll("form.provider-form").forEach(wire); }
  document.addEventListener("DOMContentLoaded", scan);
  document.addEventListener("htmx:afterSettle", scan);
})();
