// Case page: keyboard shortcuts and a clear note where no aligned crop could be cut.
// 1-9 duplicate of that candidate, d distinct, r recapture, c comment, Enter record, x release.
(function () {
  "use strict";
  document.querySelectorAll(".box img").forEach(function (img) {
    img.addEventListener("error", function () {
      var note = document.createElement("span");
      note.className = "missing";
      note.textContent = img.dataset.kind === "crop" ? "no face found for an aligned crop" : "photo not available";
      img.replaceWith(note);
    });
  });
  var form = document.getElementById("decision-form");
  if (!form) { return; }
  var candidate = document.getElementById("candidate-field");
  var comment = document.getElementById("comment");
  function sync() {
    var chosen = form.querySelector("input[name=decision]:checked");
    candidate.value = chosen && chosen.dataset.candidate ? chosen.dataset.candidate : "";
  }
  form.addEventListener("change", sync);
  form.addEventListener("submit", function (event) {
    sync();
    if (!form.querySelector("input[name=decision]:checked")) {
      event.preventDefault();
      alert("Choose a decision first.");
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.metaKey) { return; }
    var typing = event.target === comment;
    if (typing) {
      if (event.key === "Escape") { comment.blur(); }
      if (event.key === "Enter" && event.ctrlKey) { event.preventDefault(); form.requestSubmit(); }
      return;
    }
    if (event.ctrlKey) { return; }
    var key = event.key.toLowerCase();
    if (key === "enter") {
      if (form.querySelector("input[name=decision]:checked")) { event.preventDefault(); form.requestSubmit(); }
      return;
    }
    if (key === "c") { event.preventDefault(); comment.focus(); return; }
    if (key === "x") { event.preventDefault(); document.getElementById("release-form").requestSubmit(); return; }
    var radio = form.querySelector('input[name=decision][data-key="' + key + '"]');
    if (radio && !radio.disabled) {
      event.preventDefault();
      radio.checked = true;
      sync();
      radio.focus();
    }
  });
})();
