import { announce, field, h, uniqueId } from './dom';
import { coverage, invertOverlay, maskToOverlay, overlayToMask, PAINT_RGB, percentRect } from './mask-data';

type Tool = 'paint' | 'erase';

/** Undo snapshots are whole overlays: keep at most this many bytes of them. */
const UNDO_BUDGET_BYTES = 256 * 1024 * 1024;

/**
 * Paint and erase a mask over an image. The overlay canvas has the image's own size (so the mask
 * sent matches it pixel for pixel) and is scaled by CSS. Mouse, pen and touch paint with pointer
 * events; the keyboard moves a brush cursor (arrows), stamps (Space) or draws while the pen is down
 * (Enter); a rectangle can be added by numbers; a mask file can be loaded instead.
 */
export class MaskEditor {
  readonly element: HTMLElement;
  private readonly stage: HTMLDivElement;
  private readonly base: HTMLImageElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly ctx: CanvasRenderingContext2D;
  private readonly cursor: HTMLDivElement;
  private readonly status: HTMLParagraphElement;
  private readonly brushInput: HTMLInputElement;
  private readonly brushOutput: HTMLOutputElement;
  private readonly undoButton: HTMLButtonElement;
  private readonly visibleInput: HTMLInputElement;
  private readonly toolInputs: Record<Tool, HTMLInputElement>;
  private tool: Tool = 'paint';
  private brush = 32;
  private undoStack: ImageData[] = [];
  private drawing = false;
  private last: { x: number; y: number } | null = null;
  private keyCursor = { x: 0, y: 0 };
  private penDown = false;
  private covered = 0;
  width = 0;
  height = 0;

  constructor(private readonly onChange: () => void = () => undefined) {
    const helpId = uniqueId('mask-help');
    this.base = h('img', { class: 'stage-image', alt: '' });
    this.canvas = h('canvas', {
      class: 'stage-mask',
      tabindex: 0,
      // an application: screen readers hand the arrow keys and Space to it
      role: 'application',
      'aria-roledescription': 'mask canvas',
      'aria-label': 'Mask canvas: painted areas are edited',
      'aria-describedby': helpId,
    });
    this.ctx = this.canvas.getContext('2d', { willReadFrequently: true })!;
    this.cursor = h('div', { class: 'stage-cursor', 'aria-hidden': 'true' });
    this.stage = h('div', { class: 'stage' }, this.base, this.canvas, this.cursor);

    const toolName = uniqueId('tool');
    const toolRadio = (tool: Tool, label: string) => {
      const input = h('input', { type: 'radio', name: toolName, value: tool, checked: tool === 'paint', onchange: () => this.setTool(tool) });
      return [input, h('label', { class: 'radio' }, input, ` ${label}`)] as const;
    };
    const [paintInput, paintLabel] = toolRadio('paint', 'Paint');
    const [eraseInput, eraseLabel] = toolRadio('erase', 'Erase');
    this.toolInputs = { paint: paintInput, erase: eraseInput };
    this.brushInput = h('input', { type: 'range', min: 1, max: 256, value: this.brush, oninput: () => this.setBrush(Number(this.brushInput.value)) });
    this.brushOutput = h('output', null, `${this.brush} px`);
    this.undoButton = h('button', { type: 'button', onclick: () => this.undo(), disabled: true }, 'Undo');
    this.visibleInput = h('input', { type: 'checkbox', checked: true, onchange: () => this.setVisible(this.visibleInput.checked) });
    this.status = h('p', { class: 'mask-status' }, 'No mask: paint where the image should change.');

    const maskFile = h('input', { type: 'file', accept: 'image/png,image/webp', class: 'file-input' });
    maskFile.addEventListener('change', () => {
      const f = maskFile.files?.[0];
      if (f) void this.loadMaskFile(f);
      maskFile.value = '';
    });

    const rect = { x: h('input', { type: 'number', min: 0, max: 100, value: 25, inputmode: 'decimal' }), y: h('input', { type: 'number', min: 0, max: 100, value: 25, inputmode: 'decimal' }), w: h('input', { type: 'number', min: 0, max: 100, value: 50, inputmode: 'decimal' }), hh: h('input', { type: 'number', min: 0, max: 100, value: 50, inputmode: 'decimal' }) };
    const addRect = () => this.addRect({ x: Number(rect.x.value), y: Number(rect.y.value), w: Number(rect.w.value), h: Number(rect.hh.value) });

    const brushField = field('Brush size', this.brushInput);
    brushField.append(this.brushOutput);
    this.element = h(
      'section',
      { class: 'mask-editor', 'aria-label': 'Mask' },
      this.stage,
      this.status,
      h(
        'div',
        { class: 'toolbar', role: 'group', 'aria-label': 'Mask tools' },
        h('fieldset', { class: 'inline' }, h('legend', null, 'Tool'), paintLabel, eraseLabel),
        brushField,
        this.undoButton,
        h('button', { type: 'button', onclick: () => this.clear() }, 'Clear'),
        h('button', { type: 'button', onclick: () => this.invert() }, 'Invert'),
        h('label', { class: 'checkbox' }, this.visibleInput, ' Show mask'),
      ),
      h(
        'details',
        { class: 'mask-more' },
        h('summary', null, 'Upload a mask, or add a rectangle (keyboard)'),
        field('Mask file (PNG: transparent where to edit, the image’s size)', maskFile),
        h(
          'fieldset',
          { class: 'rect' },
          h('legend', null, 'Rectangle, in % of the image'),
          field('Left', rect.x),
          field('Top', rect.y),
          field('Width', rect.w),
          field('Height', rect.hh),
          h('button', { type: 'button', onclick: addRect }, 'Add to mask'),
        ),
      ),
      h(
        'p',
        { class: 'hint', id: helpId },
        'Mouse, pen or touch: drag to paint. Keyboard, with the canvas focused: arrow keys move the brush (Shift: faster), Space paints or erases at the brush, Enter puts the pen down or lifts it (then arrows draw), P paint, E erase, [ and ] brush size, Ctrl+Z undo.',
      ),
    );

    this.canvas.addEventListener('pointerdown', (e) => this.pointerDown(e));
    this.canvas.addEventListener('pointermove', (e) => this.pointerMove(e));
    this.canvas.addEventListener('pointerup', (e) => this.pointerUp(e));
    this.canvas.addEventListener('pointercancel', (e) => this.pointerUp(e));
    this.canvas.addEventListener('pointerleave', () => {
      if (!this.drawing && document.activeElement !== this.canvas) this.cursor.hidden = true;
    });
    this.canvas.addEventListener('keydown', (e) => this.keyDown(e));
    this.canvas.addEventListener('focus', () => this.showCursor(this.keyCursor.x, this.keyCursor.y));
    this.canvas.addEventListener('blur', () => {
      this.cursor.hidden = true;
      this.penDown = false;
    });
    this.cursor.hidden = true;
  }

  /** Shows an image (its URL) of the given size and starts an empty mask of that size. */
  load(url: string, width: number, height: number): void {
    this.base.src = url;
    this.width = width;
    this.height = height;
    this.canvas.width = width;
    this.canvas.height = height;
    // the stage keeps the image's proportions whatever the screen
    this.stage.style.aspectRatio = `${width} / ${height}`;
    const max = Math.max(8, Math.round(Math.max(width, height) / 4));
    this.brushInput.max = String(max);
    this.setBrush(Math.max(4, Math.round(Math.max(width, height) / 16)));
    this.keyCursor = { x: Math.round(width / 2), y: Math.round(height / 2) };
    this.undoStack = [];
    this.ctx.clearRect(0, 0, width, height);
    this.changed('');
  }

  get isEmpty(): boolean {
    return this.covered === 0;
  }

  /** The share of the image painted, 0 to 1. */
  get coverage(): number {
    return this.covered;
  }

  /** The mask to send: a PNG of the image's size, transparent where painted, opaque black elsewhere. */
  async toPng(): Promise<Blob> {
    const overlay = this.ctx.getImageData(0, 0, this.width, this.height);
    const out = document.createElement('canvas');
    out.width = this.width;
    out.height = this.height;
    const octx = out.getContext('2d')!;
    octx.putImageData(new ImageData(overlayToMask(overlay.data), this.width, this.height), 0, 0);
    return new Promise((resolve, reject) => out.toBlob((b) => (b ? resolve(b) : reject(new Error('the mask could not be encoded'))), 'image/png'));
  }

  setTool(tool: Tool): void {
    this.tool = tool;
    this.toolInputs[tool].checked = true;
  }

  setBrush(px: number): void {
    const max = Number(this.brushInput.max);
    this.brush = Math.max(1, Math.min(max, Math.round(px)));
    this.brushInput.value = String(this.brush);
    this.brushOutput.textContent = `${this.brush} px`;
    if (!this.cursor.hidden) this.showCursor(this.keyCursor.x, this.keyCursor.y);
  }

  setVisible(visible: boolean): void {
    this.visibleInput.checked = visible;
    this.canvas.classList.toggle('mask-hidden', !visible);
  }

  undo(): void {
    const prev = this.undoStack.pop();
    if (!prev) return;
    this.ctx.putImageData(prev, 0, 0);
    this.changed('Undone.');
  }

  clear(): void {
    if (this.isEmpty) return;
    this.snapshot();
    this.ctx.clearRect(0, 0, this.width, this.height);
    this.changed('Mask cleared.');
  }

  invert(): void {
    this.snapshot();
    const data = this.ctx.getImageData(0, 0, this.width, this.height);
    this.ctx.putImageData(new ImageData(invertOverlay(data.data), this.width, this.height), 0, 0);
    this.changed('Mask inverted.');
  }

  addRect(r: { x: number; y: number; w: number; h: number }): void {
    const px = percentRect(this.width, this.height, r);
    if (px.w === 0 || px.h === 0) {
      announce('The rectangle is empty.');
      return;
    }
    this.snapshot();
    this.style();
    if (this.tool === 'erase') this.ctx.clearRect(px.x, px.y, px.w, px.h);
    else this.ctx.fillRect(px.x, px.y, px.w, px.h);
    this.changed(`Rectangle ${this.tool === 'erase' ? 'erased' : 'painted'}.`);
  }

  /** A mask file in OpenAI's convention (transparent = edit), the image's size. */
  async loadMaskFile(file: File): Promise<void> {
    try {
      const bitmap = await createImageBitmap(file);
      if (bitmap.width !== this.width || bitmap.height !== this.height) {
        this.status.textContent = `The mask is ${bitmap.width}×${bitmap.height}; it must be the image's size, ${this.width}×${this.height}.`;
        announce(this.status.textContent);
        return;
      }
      const tmp = document.createElement('canvas');
      tmp.width = this.width;
      tmp.height = this.height;
      const tctx = tmp.getContext('2d', { willReadFrequently: true })!;
      tctx.drawImage(bitmap, 0, 0);
      const rgba = tctx.getImageData(0, 0, this.width, this.height).data;
      this.snapshot();
      this.ctx.putImageData(new ImageData(maskToOverlay(rgba), this.width, this.height), 0, 0);
      this.changed(`Mask loaded from ${file.name}.`);
    } catch {
      this.status.textContent = `${file.name} could not be read as an image.`;
      announce(this.status.textContent);
    }
  }

  // ---- painting ----

  private style(): void {
    const [r, g, b] = PAINT_RGB;
    this.ctx.globalCompositeOperation = this.tool === 'erase' ? 'destination-out' : 'source-over';
    this.ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
    this.ctx.strokeStyle = `rgb(${r}, ${g}, ${b})`;
    this.ctx.lineCap = 'round';
    this.ctx.lineJoin = 'round';
    this.ctx.lineWidth = this.brush;
  }

  private stamp(x: number, y: number): void {
    this.style();
    this.ctx.beginPath();
    this.ctx.arc(x, y, this.brush / 2, 0, Math.PI * 2);
    this.ctx.fill();
  }

  private line(from: { x: number; y: number }, to: { x: number; y: number }): void {
    this.style();
    this.ctx.beginPath();
    this.ctx.moveTo(from.x, from.y);
    this.ctx.lineTo(to.x, to.y);
    this.ctx.stroke();
  }

  private point(e: PointerEvent): { x: number; y: number } {
    const rect = this.canvas.getBoundingClientRect();
    return { x: ((e.clientX - rect.left) * this.width) / rect.width, y: ((e.clientY - rect.top) * this.height) / rect.height };
  }

  private pointerDown(e: PointerEvent): void {
    if (!this.width || e.button > 0) return;
    e.preventDefault();
    this.canvas.setPointerCapture(e.pointerId);
    this.snapshot();
    this.drawing = true;
    const p = this.point(e);
    this.stamp(p.x, p.y);
    this.last = p;
    this.showCursor(p.x, p.y);
  }

  private pointerMove(e: PointerEvent): void {
    const p = this.point(e);
    this.showCursor(p.x, p.y);
    if (!this.drawing || !this.last) return;
    this.line(this.last, p);
    this.last = p;
  }

  private pointerUp(e: PointerEvent): void {
    if (!this.drawing) return;
    this.drawing = false;
    this.last = null;
    if (this.canvas.hasPointerCapture(e.pointerId)) this.canvas.releasePointerCapture(e.pointerId);
    this.changed('');
  }

  private keyDown(e: KeyboardEvent): void {
    if (!this.width) return;
    const step = Math.max(1, Math.round(this.brush / 2)) * (e.shiftKey ? 4 : 1);
    const moves: Record<string, [number, number]> = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    const move = moves[e.key];
    if (move) {
      e.preventDefault();
      const from = { ...this.keyCursor };
      this.keyCursor = { x: clamp(from.x + move[0], 0, this.width - 1), y: clamp(from.y + move[1], 0, this.height - 1) };
      if (this.penDown) {
        this.line(from, this.keyCursor);
        this.changed('', false);
      }
      this.showCursor(this.keyCursor.x, this.keyCursor.y);
      return;
    }
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z') {
      e.preventDefault();
      this.undo();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    switch (e.key) {
      case ' ':
        e.preventDefault();
        this.snapshot();
        this.stamp(this.keyCursor.x, this.keyCursor.y);
        this.changed(this.tool === 'erase' ? 'Erased at the brush.' : 'Painted at the brush.');
        break;
      case 'Enter':
        e.preventDefault();
        this.penDown = !this.penDown;
        if (this.penDown) {
          this.snapshot();
          this.stamp(this.keyCursor.x, this.keyCursor.y);
        }
        this.changed(this.penDown ? `Pen down: arrow keys ${this.tool === 'erase' ? 'erase' : 'paint'}.` : 'Pen up.');
        break;
      case 'p':
      case 'P':
        this.setTool('paint');
        announce('Paint');
        break;
      case 'e':
      case 'E':
        this.setTool('erase');
        announce('Erase');
        break;
      case '[':
        this.setBrush(this.brush - Math.max(1, Math.round(this.brush / 5)));
        announce(`Brush ${this.brush} pixels`);
        break;
      case ']':
        this.setBrush(this.brush + Math.max(1, Math.round(this.brush / 5)));
        announce(`Brush ${this.brush} pixels`);
        break;
      default:
    }
  }

  private showCursor(x: number, y: number): void {
    if (!this.width) return;
    this.cursor.hidden = false;
    this.cursor.style.left = `${(x / this.width) * 100}%`;
    this.cursor.style.top = `${(y / this.height) * 100}%`;
    this.cursor.style.width = `${(this.brush / this.width) * 100}%`;
    this.cursor.style.height = `${(this.brush / this.height) * 100}%`;
    this.cursor.classList.toggle('pen-down', this.penDown);
  }

  private snapshot(): void {
    if (!this.width) return;
    this.undoStack.push(this.ctx.getImageData(0, 0, this.width, this.height));
    const max = Math.max(1, Math.floor(UNDO_BUDGET_BYTES / (this.width * this.height * 4)));
    while (this.undoStack.length > max) this.undoStack.shift();
    this.undoButton.disabled = false;
  }

  /** After any change: coverage, the status line (and the live region with `message`), the form. */
  private changed(message: string, full = true): void {
    this.undoButton.disabled = this.undoStack.length === 0;
    if (full || this.covered === 0) this.covered = this.width ? coverage(this.ctx.getImageData(0, 0, this.width, this.height).data) : 0;
    const pct = this.covered * 100;
    this.status.textContent =
      this.covered === 0 ? 'No mask: paint where the image should change.' : `Mask covers ${pct < 0.1 ? '<0.1' : pct.toFixed(1)}% of the image (painted areas are edited).`;
    if (message) announce(`${message} ${this.status.textContent}`);
    this.onChange();
  }
}

const clamp = (v: number, min: number, max: number) => Math.max(min, Math.min(max, v));
