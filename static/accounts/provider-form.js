// The wizard's "Add new server" form: choosing a security fills in its usual port,
// and typing a well-known port picks its security. Both stay editable. Listens on
// the document, so a form that htmx swaps in works from its first keystroke.
(function () {
  var byPort = {
    imap: { 993: "ssl", 143: "starttls" },
    smtp: { 465: "ssl", 587: "starttls", 25: "starttls" },
  };

  function portsFor(form, kind) {
    return JSON.parse(form.dataset[kind + "Ports"]);
  }

  // Each service type's own fields, as its mail backend declares them (the select's
  // data-fields-by-type, mail.backend.MailBackend.provider_fields): those of the chosen
  // type show, the other types' own hide, every other field stays as it is.
  function showFieldsFor(form) {
    var type = form.querySelector('[name="service_type"]');
    if (!type || !type.dataset.fieldsByType) return;
    var byType = JSON.parse(type.dataset.fieldsByType);
    var chosen = byType[type.value] || [];
    var owned = [];
    Object.keys(byType).forEach(function (kind) { owned = owned.concat(byType[kind]); });
    form.querySelectorAll(".field").forEach(function (field) {
      var name = field.dataset.field;
      if (owned.indexOf(name) !== -1) field.hidden = chosen.indexOf(name) === -1;
    });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    var form = target.closest("form.provider-form");
    if (!form) return;
    var kind = target.dataset.securityFor;
    if (kind) {
      var ports = portsFor(form, kind);
      var port = form.querySelector('[data-port-for="' + kind + '"]');
      var usual = Object.values(ports).map(String);
      // Only a usual port follows the security; a custom one is the user's.
      if (port.value === "" || usual.indexOf(port.value) !== -1) port.value = ports[target.value];
    }
    if (target.name === "service_type") showFieldsFor(form);
  });

  document.addEventListener("input", function (event) {
    var target = event.target;
    var kind = target.dataset.portFor;
    var form = target.closest("form.provider-form");
    if (!form || !kind) return;
    var security = form.querySelector('[data-security-for="' + kind + '"]');
    var known = byPort[kind][target.value];
    if (known) security.value = known;
  });

  function scan() { document.querySelectorAll("form.provider-form").forEach(showFieldsFor); }
  document.addEventListener("DOMContentLoaded", scan);
  document.addEventListener("htmx:afterSettle", scan);
})();
