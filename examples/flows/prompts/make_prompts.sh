#!/usr/bin/env bash
# Regenerate the example prompts with espeak-ng and sox: 8 kHz mono G.711 u-law WAV,
# one directory per language code (the layout every flow's prompt_dir uses).
set -euo pipefail
cd "$(dirname "$0")"
say_as() {  # say_as VOICE DIR NAME TEXT
  mkdir -p "$2"
  espeak-ng -v "$1" -s 150 -w "/tmp/prompt_$$.wav" "$4"
  sox "/tmp/prompt_$$.wav" -r 8000 -c 1 -e u-law -b 8 "$2/$3.wav"
  rm -f "/tmp/prompt_$$.wav"
}
say() { say_as "$1" "$1" "$2" "$3"; }  # say LANG NAME TEXT
say en welcome "Welcome to Example Corp."
say fr welcome "Bienvenue chez Example Corp."
# the language menu speaks each choice in its own language, whatever the caller's
for dir in en fr; do
  say_as en "$dir" choose_english "For English, press 1."
  say_as fr "$dir" choose_french "Pour le français, tapez 2."
done
say en main_menu "For sales, press 1. For support, press 2. To hear this again, press star."
say fr main_menu "Pour les ventes, tapez 1. Pour le support, tapez 2. Pour réécouter, tapez étoile."
say en sales_menu "For new orders, press 1. For existing orders, press 2. To go back, press 9."
say fr sales_menu "Pour une nouvelle commande, tapez 1. Pour une commande existante, tapez 2. Pour revenir, tapez 9."
say en invalid "Sorry, that is not a valid choice."
say fr invalid "Désolé, ce choix n'est pas valide."
say en no_input "Sorry, I did not hear your choice."
say fr no_input "Désolé, je n'ai pas entendu votre choix."
say en goodbye "Thank you for calling. Goodbye."
say fr goodbye "Merci de votre appel. Au revoir."
