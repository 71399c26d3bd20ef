// The message box: Enter sends, Shift+Enter is a new line, and Enter while an IME composition is active (Korean,
// Japanese, Chinese) never sends.
//
// Why three checks: Chrome and Firefox mark the Enter that commits a syllable with `isComposing`; Safari fires
// `compositionend` first and then a keydown with keyCode 229 and isComposing false; some Android keyboards send
// only keyCode 229. Sending on any of them would clear the box, and then the IME would commit the pending syllable
// into the empty box: the well-known "last syllable duplicated" bug.

export function attachComposer(textarea, { onSend, onEscape }) {
  let composing = false;
  textarea.addEventListener("compositionstart", () => {
    composing = true;
  });
  textarea.addEventListener("compositionend", () => {
    composing = false;
  });
  textarea.addEventListener("blur", () => {
    composing = false;
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && onEscape) {
      onEscape(event);
      return;
    }
    if (event.key !== "Enter" || event.shiftKey || event.altKey || event.metaKey || event.ctrlKey) return;
    if (event.isComposing || composing || event.keyCode === 229) return;
    event.preventDefault();
    onSend();
  });
  if (!CSS.supports("field-sizing", "content")) {
    // Older browsers: grow the box with its text (CSSOM styles are allowed by the CSP; style attributes are not).
    const grow = () => {
      textarea.style.height = "auto";
      textarea.style.height = `${Math.min(textarea.scrollHeight, 240)}px`;
    };
    textarea.addEventListener("input", grow);
    return { grow };
  }
  return { grow() {} };
}
