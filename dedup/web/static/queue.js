// Queue and result pages: "n" takes the next case.
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.altKey || event.metaKey) { return; }
    var tag = event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA") { return; }
    var next = document.getElementById("next-case");
    if (event.key.toLowerCase() === "n" && next) { event.preventDefault(); next.form.requestSubmit(); }
  });
})();
