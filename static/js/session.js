// Loaded on every signed-in page: the Sign out button (a POST with the CSRF token).
import { csrfToken } from "./common.js";

const button = document.querySelector("[data-logout]");
if (button) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrfToken() } });
    } finally {
      window.location.assign("/login");
    }
  });
}

