// What the sections share while the page lives (memory only).
export const store = {
  /** The prompt the user kept from an optimisation: it fills the generation form. */
  acceptedPrompt: null as string | null,
};
