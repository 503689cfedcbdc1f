// Progressive enhancement only: every page works without JavaScript.
document.addEventListener("change", function (event) {
  var el = event.target;
  if (el.matches("select[data-autosubmit]") && el.form) el.form.submit();
});
