// Small progressive enhancements; every page works without them. No inline script: the CSP forbids it.
"use strict";

// Buttons with data-confirm ask before their form is sent.
document.addEventListener("submit", function (event) {
  const button = event.submitter;
  const message = button && button.dataset.confirm;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// Choosing a policy kind fills the settings box with a working example, unless it was edited.
document.addEventListener("change", function (event) {
  const select = event.target;
  const form = select.closest("form[data-policy-form]");
  if (!form || select.name !== "kind") return;
  const examples = JSON.parse(document.getElementById("policy-examples").textContent);
  const settings = form.querySelector("textarea[name=settings]");
  const untouched = Object.values(examples).some(function (text) { return text === settings.value; });
  if (untouched || settings.value.trim() === "") {
    settings.value = examples[select.value] || "{}";
  }
});
