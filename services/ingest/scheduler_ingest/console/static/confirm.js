// Irreversible actions (abort, deactivate a key, rotate the signing secret) are forms with
// data-confirm="<question>": their first submit shows a small inline confirm next to the form
// instead; "Yes" posts the form with confirmed=yes, "Cancel" (or Escape) takes it back.
// Without this script the server answers such a post with a confirmation page: nothing changes
// before an explicit yes either way.
(function () {
  var counter = 0;

  function close(box, form) {
    box.remove();
    var button = form.querySelector("button[type=submit]");
    if (button) button.focus();
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-confirm")) return;
    if (form.querySelector("input[name=confirmed]")) return; // confirmed: let it go
    event.preventDefault();
    var open = form.nextElementSibling;
    if (open && open.classList.contains("confirm-inline")) {
      open.querySelector("button.danger").focus();
      return;
    }
    counter += 1;
    var box = document.createElement("div");
    box.className = "confirm-inline";
    box.setAttribute("role", "alertdialog");
    box.setAttribute("aria-labelledby", "confirm-q-" + counter);
    var question = document.createElement("p");
    question.id = "confirm-q-" + counter;
    question.textContent = form.getAttribute("data-confirm");
    var yes = document.createElement("button");
    yes.type = "button";
    yes.className = "danger";
    yes.textContent = form.getAttribute("data-confirm-yes") || "Yes";
    var no = document.createElement("button");
    no.type = "button";
    no.className = "secondary";
    no.textContent = "Cancel";
    yes.addEventListener("click", function () {
      var field = document.createElement("input");
      field.type = "hidden";
      field.name = "confirmed";
      field.value = "yes";
      form.appendChild(field);
      yes.disabled = true;
      form.submit();
    });
    no.addEventListener("click", function () { close(box, form); });
    box.addEventListener("keydown", function (e) {
      if (e.key === "Escape") close(box, form);
    });
    var buttons = document.createElement("div");
    buttons.className = "confirm-buttons";
    buttons.appendChild(yes);
    buttons.appendChild(no);
    box.appendChild(question);
    box.appendChild(buttons);
    form.insertAdjacentElement("afterend", box);
    yes.focus();
  });
})();
