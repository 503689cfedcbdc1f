// Progressive enhancement only: every page works without JavaScript.
document.addEventListener("change", function (event) {
  var el = event.target;
  if (el.matches("select[data-autosubmit]") && el.form) el.form.submit();
});

// Live pages (htmx polls their fragments): the run output follows its tail unless the reader
// scrolled up in it, and the scroll position survives each swap.
(function () {
  var followed = true;
  var kept = null;
  document.addEventListener("htmx:beforeSwap", function () {
    var pre = document.getElementById("run-output-text");
    if (!pre) return;
    followed = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    kept = pre.scrollTop;
  });
  function follow() {
    var pre = document.getElementById("run-output-text");
    if (!pre) return;
    if (pre.hasAttribute("data-follow") && followed) pre.scrollTop = pre.scrollHeight;
    else if (kept !== null) pre.scrollTop = kept;
  }
  document.addEventListener("htmx:afterSettle", follow);
  document.addEventListener("DOMContentLoaded", follow);
})();
