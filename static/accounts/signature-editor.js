// The signature editor: a contenteditable box that keeps the form's textarea (what is
// posted) in step. Pasting from a mail client keeps its formatting (the browser's own
// paste); a pasted or chosen image goes in as an inline image. Without JavaScript the
// textarea and the file field work on their own. The server sanitises whatever comes.
(function () {
  function setUp(root) {
    const forms = root.matches && root.matches("[data-signature-form]")
      ? [root] : root.querySelectorAll("[data-signature-form]");
    for (const form of forms) {
      if (form.dataset.editorReady) continue;
      form.dataset.editorReady = "1";
      const source = form.querySelector("textarea");
      const editor = form.querySelector("[data-signature-editor]");
      const picker = form.querySelector("input[type=file]");
      editor.innerHTML = source.value;
      editor.hidden = false;
      source.hidden = true;
      const changed = () => {
        source.value = editor.innerHTML;
        form.dispatchEvent(new Event("signature-changed"));
      };
      const insertImage = (file) => {
        const reader = new FileReader();
        reader.onload = () => {
          const image = document.createElement("img");
          image.src = reader.result;
          image.alt = file.name || "image";
          editor.append(image);
          changed();
        };
        reader.readAsDataURL(file);
      };
      editor.addEventListener("input", changed);
      editor.addEventListener("paste", (event) => {
        const images = [...event.clipboardData.files].filter((f) => f.type.startsWith("image/"));
        if (!images.length) return;
        event.preventDefault();
        images.forEach(insertImage);
      });
      picker.addEventListener("change", () => {
        [...picker.files].forEach(insertImage);
        picker.value = "";  // already in the signature: not uploaded a second time
      });
    }
  }
  if (window.htmx) {
    htmx.onLoad(setUp);
  } else {
    document.addEventListener("DOMContentLoaded", () => setUp(document));
  }
})();
